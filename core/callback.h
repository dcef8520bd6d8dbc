/* SPDX-License-Identifier: MIT */
/*
 * core/callback.h - what a thread may do while rdm runs one of its callbacks.
 *
 * rdm calls user code from inside its own critical sections: listener
 * callbacks and release callbacks run with the region's writer lock held
 * (on the submitting thread, or on the IOMMU worker); replay callbacks run
 * inside an RCU read-side section; completion callbacks and on_batch run on
 * the worker thread between batches; the log handler runs wherever a message
 * arises. A change made from there would wait for the lock, the worker or a
 * grace period that the waiting thread itself holds up: a silent hang. So
 * every such call is bracketed by rdm_callback_enter()/leave() (a per-thread
 * depth), and every public call that may block or take a region's locks
 * starts with rdm_check_may_block(), which refuses with -EDEADLK and a
 * message naming the call. The same check refuses calls made inside the
 * caller's own RCU read-side section (urcu-bp's rcu_read_ongoing()), where a
 * grace period could never end.
 */
#ifndef RDM_CORE_CALLBACK_H
#define RDM_CORE_CALLBACK_H

/* The calling thread's depth of rdm callbacks. Initial-exec TLS: a few
 * bytes of librdm.so's static TLS block, so an access (an enter and a
 * leave around the listener call of each change the worker applies) is one
 * instruction off the thread pointer, not a __tls_get_addr() call. */
extern __thread unsigned rdm_callback_depth __attribute__((tls_model("initial-exec")));

static inline void rdm_callback_enter(void)
{
	rdm_callback_depth++;
}

static inline void rdm_callback_leave(void)
{
	rdm_callback_depth--;
}

/* 0, or -EDEADLK (message set) inside a callback or a read-side section. */
int rdm_check_may_block(const char *what);

#endif /* RDM_CORE_CALLBACK_H */
