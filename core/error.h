/* SPDX-License-Identifier: MIT */
/* core/error.h - recording failures: the thread-local message and the log hook. */
#ifndef RDM_CORE_ERROR_H
#define RDM_CORE_ERROR_H

#include <rdm/error.h>

/*
 * Record a failure: format the calling thread's message, pass it to the log
 * handler at RDM_LOG_DEBUG, and return err (a negative errno) so a caller can
 * write `return rdm_fail(-EINVAL, "...", ...);`.
 */
int rdm_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Forget the calling thread's message (so a later check can tell whether a
 * callee recorded one). */
void rdm_error_clear(void);

/* Log a message that is not a call's failure (worker-side events). */
void rdm_log(enum rdm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* RDM_CORE_ERROR_H */
