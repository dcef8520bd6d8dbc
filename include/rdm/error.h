/* SPDX-License-Identifier: MIT */
/*
 * rdm/error.h - the thread-local error message and the optional log hook.
 *
 * rdm never prints on its own. A failing call returns a negative errno and
 * records a message naming the problem; the message belongs to the calling
 * thread and stays valid until that thread's next rdm call. A program that
 * wants rdm's diagnostics (including ones that are not tied to a call's
 * return value, such as a backend marked failed on the worker thread)
 * installs a log handler.
 */
#ifndef RDM_ERROR_H
#define RDM_ERROR_H

#include <rdm/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The message of the calling thread's most recent failure, or "" if none.
 * Never NULL. Valid until this thread's next rdm call.
 */
RDM_API const char *rdm_last_error(void);

enum rdm_log_level {
	RDM_LOG_ERROR = 0,
	RDM_LOG_WARNING = 1,
	RDM_LOG_INFO = 2,
	RDM_LOG_DEBUG = 3,
};

/*
 * Called with every message at or below the chosen level, from whichever
 * thread produced it (often the IOMMU worker). It must not call back into rdm:
 * rdm_last_error() and queries are harmless, every call that may block or
 * change state fails there with -EDEADLK.
 */
typedef void (*rdm_log_fn)(void *opaque, enum rdm_log_level level, const char *msg);

/*
 * Install (or with fn == NULL remove) the process-wide log handler.
 * Failures of API calls are logged at RDM_LOG_DEBUG, worker-side events
 * (backend failures, exceeded limits) at RDM_LOG_ERROR or RDM_LOG_WARNING.
 * Safe to call at any time, from any thread. The (fn, opaque, max_level)
 * triple is replaced as a whole: a message is passed to one call's fn with
 * that same call's opaque, never a mix. A handler being replaced may still
 * be running on another thread, or be called once more, when this returns.
 * Returns 0, or -ENOMEM (the previous handler stays installed).
 */
RDM_API int rdm_set_log_handler(rdm_log_fn fn, void *opaque, enum rdm_log_level max_level);

#ifdef __cplusplus
}
#endif

#endif /* RDM_ERROR_H */
