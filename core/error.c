/* SPDX-License-Identifier: MIT */
/* core/error.c - the thread-local error message and the process-wide log hook. */
#include "core/error.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

static _Thread_local char last_error[256];

/*
 * The handler is a (function, opaque, level) triple replaced as a whole.
 * Readers may run on any thread; a handler being replaced can still be called
 * once more, as rdm_set_log_handler() documents. A small mutex-free scheme is
 * enough: the triple lives in a static slot array indexed by an atomic
 * generation, and a reader that loads the generation with acquire sees the
 * slot the writer filled before its release store.
 */
struct log_handler {
	rdm_log_fn fn;
	void *opaque;
	enum rdm_log_level max_level;
};

static struct log_handler handlers[2];
static atomic_uint handler_gen;

const char *rdm_last_error(void)
{
	return last_error;
}

void rdm_set_log_handler(rdm_log_fn fn, void *opaque, enum rdm_log_level max_level)
{
	/* Relaxed: only this function writes handler_gen; concurrent setters are
	 * the caller's race, as with any process-wide hook. */
	unsigned gen = atomic_load_explicit(&handler_gen, memory_order_relaxed) + 1;
	struct log_handler *h = &handlers[gen & 1];

	h->fn = fn;
	h->opaque = opaque;
	h->max_level = max_level;
	/* Release: pairs with the acquire load in emit(); the slot is complete
	 * before a reader can pick it. */
	atomic_store_explicit(&handler_gen, gen, memory_order_release);
}

static void emit(enum rdm_log_level level, const char *msg)
{
	/* Acquire: pairs with the release store in rdm_set_log_handler(). */
	unsigned gen = atomic_load_explicit(&handler_gen, memory_order_acquire);
	const struct log_handler *h = &handlers[gen & 1];

	if (gen != 0 && h->fn != NULL && level <= h->max_level)
		h->fn(h->opaque, level, msg);
}

void rdm_error_clear(void)
{
	last_error[0] = '\0';
}

int rdm_fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	emit(RDM_LOG_DEBUG, last_error);
	return err;
}

void rdm_log(enum rdm_log_level level, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	emit(level, buf);
}
