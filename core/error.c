/* SPDX-License-Identifier: MIT */
/* core/error.c - the thread-local error message and the process-wide log hook. */
#include "core/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <urcu-bp.h>

#include "core/alloc.h"
#include "core/callback.h"
#include "core/tsan.h"

static _Thread_local char last_error[256];
__thread unsigned rdm_callback_depth __attribute__((tls_model("initial-exec")));

int rdm_check_may_block(const char *what)
{
	if (rdm_callback_depth != 0)
		return rdm_fail(-EDEADLK, "%s: not allowed from an rdm callback (listener, release, "
				"replay, completion or log handler); only queries and "
				"rdm_producer_poll may be called there", what);
	if (rcu_read_ongoing())
		return rdm_fail(-EDEADLK, "%s: not allowed inside an RCU read-side critical section "
				"(it may wait for a grace period)", what);
	return 0;
}

/*
 * The handler is a (function, opaque, level) triple replaced as a whole: each
 * rdm_set_log_handler() publishes a new immutable record with one pointer
 * store, so a reader never pairs one call's function with another call's
 * opaque pointer. Readers run inside an RCU read-side section (urcu-bp: any
 * thread, no registration); the replaced record is freed by call_rcu once
 * every reader that could hold it has left, so a handler being replaced may
 * still run once more, as rdm_set_log_handler() documents, but never with a
 * torn pair.
 */
struct log_handler {
	rdm_log_fn fn;
	void *opaque;
	enum rdm_log_level max_level;
	struct rcu_head rcu;
};

static struct log_handler *_Atomic handler;

const char *rdm_last_error(void)
{
	return last_error;
}

/* The grace-period edge TSan cannot see (core/tsan.h): readers release
 * into this key before they leave their section, as does the setter before
 * it hands the old record to call_rcu; the reclaimer acquires it. */
static char handler_gp;

static void free_handler(struct rcu_head *head)
{
	rdm_tsan_acquire(&handler_gp);
	/* Not caa_container_of: liburcu's macro casts away a const it adds
	 * (clang's -Wcast-qual). */
	rdm_free((char *)head - offsetof(struct log_handler, rcu));
}

int rdm_set_log_handler(rdm_log_fn fn, void *opaque, enum rdm_log_level max_level)
{
	struct log_handler *h = NULL, *old;

	if (fn != NULL) {
		h = rdm_malloc(sizeof(*h));
		if (h == NULL)
			return rdm_fail(-ENOMEM, "set log handler: out of memory");
		h->fn = fn;
		h->opaque = opaque;
		h->max_level = max_level;
	}
	/* Release: pairs with the acquire load in emit(); the record is
	 * complete before a reader can reach it. Acquire: the old record's
	 * contents are ours to free. */
	old = atomic_exchange_explicit(&handler, h, memory_order_acq_rel);
	if (old != NULL) {
		/* The hand-off to the call_rcu thread, also unseen by TSan. */
		rdm_tsan_release(&handler_gp);
		call_rcu(&old->rcu, free_handler);
	}
	return 0;
}

static void emit(enum rdm_log_level level, const char *msg)
{
	const struct log_handler *h;

	rcu_read_lock();
	/* Acquire: pairs with the exchange in rdm_set_log_handler(). */
	h = atomic_load_explicit(&handler, memory_order_acquire);
	if (h != NULL && level <= h->max_level) {
		rdm_callback_enter();
		h->fn(h->opaque, level, msg);
		rdm_callback_leave();
	}
	rdm_tsan_release(&handler_gp);
	rcu_read_unlock();
}

void rdm_error_clear(void)
{
	last_error[0] = '\0';
}

int rdm_fail(int err, const char *fmt, ...)
{
	va_list ap;

	char buf[sizeof(last_error)];

	/* Format into a local buffer first: an argument may be the thread's
	 * own message (rdm_fail(err, "...: %s", rdm_last_error())), which
	 * vsnprintf must not read while it writes the same bytes. */
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	memcpy(last_error, buf, sizeof(buf));
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
