/*
 * models/ring_wakeup.pml - the SPSC ring's wake-up protocol (ring/ring.c,
 * include/rdm/ring_pvt.h), both sides, for spin.
 *
 * What is checked (exhaustively, for N records through a ring of CAP slots,
 * zero spin budget, so every empty/full moment goes to the sleep path):
 *   - no lost wake-up: the producer and the consumer are never both blocked
 *     in FUTEX_WAIT (monitor below). A blocked side needs the other to wake
 *     it, so both blocked is exactly a lost wake-up: one of them waits for
 *     an index that has already moved (the ring cannot be empty and full at
 *     once), or will never move.
 *   - deadlock freedom: every run ends with both sides done (spin's
 *     invalid-end-state check; the store-buffer drains and the monitor are
 *     the only processes allowed to stop anywhere).
 *   - the consumer receives the N records in order (assert at its end).
 *
 * Variants (spin -D...):
 *   ASYM          the asymmetric protocol of private rings: the publisher's
 *                 index store is a plain (release) store, its flag load
 *                 relaxed, with only a compiler barrier between them; the
 *                 sleeper issues membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
 *                 between its flag store and its index load.
 *                 Without ASYM: the seq_cst protocol (shared rings, TSan
 *                 builds): index store and flag store are seq_cst.
 *   OLD_PROTOCOL  the protocol before the fix: the waker, having loaded a set
 *                 flag, clears it with an exchange and calls FUTEX_WAKE only
 *                 if the exchange returned 1 (ring_wakeup_old.pml sets it).
 *
 * Memory model. Each side has a FIFO store buffer (x86-TSO: a store becomes
 * visible later, in program order; a load reads memory). This is what makes
 * the publisher's "store index; load flag" and the sleeper's "store flag;
 * load index" a Dekker pair that needs a fence: without one the load may be
 * satisfied while the store is still buffered. A fence (a seq_cst store on
 * x86 is a locked instruction, a futex system call, a locked exchange) waits
 * until the side's own buffer is empty. membarrier waits until BOTH buffers
 * are empty: the kernel makes every running thread of the process execute a
 * full barrier before the call returns, so every store the other side issued
 * before that point B is visible, and its loads after B see our flag. Neither
 * side reads a location it has buffered a store to, so store forwarding is
 * not needed.
 *
 * Futex. FUTEX_WAIT(word, val) is a full barrier, then atomically: if the
 * word in memory differs from val return at once, else block. FUTEX_WAKE is a
 * full barrier, then atomically unblocks the waiter on that word (each word
 * has at most one: the consumer waits on the tail, the producer on the head).
 * A blocked side leaves only when woken: spurious wake-ups (signals) only
 * make more runs end well, so leaving them out loses no counterexample.
 *
 * Which code each step models (names as in ring/ring.c's theory block and
 * the labels in the code's comments):
 *   producer() loop      rdm_ring_push() + rdm_ring_wait_writable(r, 0)
 *   consumer() loop      rdm_ring_pop() + rdm_ring_wait_readable(r, 0)
 *   hc = mem[HEAD]       A2: rdm_ring_pvt_prod_room()'s acquire load of head
 *   tc = mem[TAIL]       A1: rdm_ring_pvt_cons_avail()'s acquire load of tail
 *   publish(): store     W = R1/R2: the index store in
 *                        rdm_ring_pvt_push_publish() / _pop_publish()
 *              f = ...   Lf = S1/S2: the flag load right after it
 *              wake      rdm_ring_pvt_wake_consumer() / _wake_producer():
 *                        futex_op(FUTEX_WAKE) (OLD_PROTOCOL: the exchange
 *                        first, as the code had it)
 *   sleep_on(): store 1  F = S1'/S2': atomic_store(..._sleeping, 1) in the
 *                        wait functions
 *               fence    the seq_cst store, or rdm_ring_pvt_heavy_fence()
 *               seen     L: the index load after it
 *               wait     futex_op(FUTEX_WAIT, seen) when seen shows
 *                        empty / full
 *               store 0  Z: atomic_store(..._sleeping, 0) once awake
 *
 * Indices do not wrap here (N < 256): the code's free-running 32-bit indices
 * cannot make the futex word come back to the value a sleeper saw, because
 * tail - head stays within capacity <= 2^28 while it sleeps.
 */

#ifndef N
#define N 4
#endif
#ifndef CAP
#define CAP 2
#endif

/* Shared locations, by number. */
#define TAIL  0 /* rdm_ring_shared.tail: written by the producer */
#define HEAD  1 /* rdm_ring_shared.head: written by the consumer */
#define CFLAG 2 /* rdm_ring_shared.consumer_sleeping */
#define PFLAG 3 /* rdm_ring_shared.producer_sleeping */

#define P 0 /* the producer side */
#define C 1 /* the consumer side */

byte mem[4];                    /* memory as the other side sees it */
chan buf[2] = [4] of { byte, byte }; /* each side's store buffer: (location, value) */
bit blocked[2];                 /* side is in FUTEX_WAIT, not yet woken */
byte delivered;                 /* records the consumer has taken, in order */

/* A store enters the side's buffer; it reaches memory later, in order. */
inline store(s, loc, val) { buf[s]!loc,val }

/* A full barrier of side s: wait until its earlier stores are visible. */
inline fence(s) { (len(buf[s]) == 0) }

/* membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) by side s: a full barrier for
 * the caller and, at some point B before it returns, for the other side. */
inline membarrier() { (len(buf[P]) == 0 && len(buf[C]) == 0) }

/* syscall(SYS_futex, &word, FUTEX_WAIT, val): ring.c futex_op(). */
inline futex_wait(s, loc, val)
{
	fence(s);
	atomic {
		if
		:: mem[loc] == val -> blocked[s] = 1
		:: else -> skip /* EAGAIN: the word changed */
		fi
	}
	(blocked[s] == 0) /* asleep until a FUTEX_WAKE on loc */
}

/* syscall(SYS_futex, &word, FUTEX_WAKE, INT_MAX) waking side `who`. */
inline futex_wake(s, who)
{
	fence(s);
	blocked[who] = 0
}

/*
 * The publisher's end: rdm_ring_push_publish() / rdm_ring_pop_publish()
 * (ring_pvt.h) and the wake helpers rdm_ring_wake_consumer_slow() /
 * rdm_ring_wake_producer_slow() (ring.c). s publishes index `loc` = val and
 * wakes side `who`, whose need-wakeup flag is `flag`.
 */
inline publish(s, loc, val, flag, who)
{
	/* R1/R2: atomic_store_explicit(&sh->tail|head, ..., release or seq_cst) */
	store(s, loc, val);
#ifndef ASYM
	/* seq_cst store: a locked instruction on x86 (S1/S2, seq_cst protocol) */
	fence(s);
#endif
	/* S1/S2: asymmetric: atomic_signal_fence only (nothing to model: the
	 * load stays after the store in program order), then the relaxed
	 * flag load; seq_cst: the seq_cst flag load. */
	f = mem[flag];
	if
	:: f ->
#ifdef OLD_PROTOCOL
		/* old rdm_ring_wake_*_slow: atomic_exchange_explicit(flag, 0)
		 * (locked: a full barrier), then FUTEX_WAKE only if it was 1. */
		fence(s);
		atomic { f = mem[flag]; mem[flag] = 0 }
		if
		:: f -> futex_wake(s, who)
		:: else -> skip
		fi
#else
		/* rdm_ring_wake_*_slow: FUTEX_WAKE; the flag is the sleeper's. */
		futex_wake(s, who)
#endif
	:: else -> skip
	fi
}

/*
 * The sleeper's end: the tail of rdm_ring_wait_readable() /
 * rdm_ring_wait_writable() (ring.c) after the spin loop found nothing.
 * Sets `flag`, rechecks index `loc`, sleeps on it while it still reads
 * `expect`, then clears its own flag.
 */
inline sleep_on(s, flag, loc, expect)
{
	/* S1'/S2': atomic_store_explicit(&sh->..._sleeping, 1, relaxed or seq_cst) */
	store(s, flag, 1);
#ifdef ASYM
	/* rdm_ring_heavy_fence_slow(): membarrier */
	membarrier();
#else
	fence(s); /* the seq_cst store */
#endif
	/* S1'/S2': the index load (acquire or seq_cst), also A1/A2 */
	seen = mem[loc];
	if
	:: seen == expect -> futex_wait(s, loc, seen)
	:: else -> skip
	fi;
	/* atomic_store_explicit(&sh->..._sleeping, 0, relaxed) once awake */
	store(s, flag, 0)
}

proctype drain(byte s)
{
	byte loc, val;
end:	do
	:: atomic { buf[s]?loc,val -> mem[loc] = val }
	od
}

/* rdm_ring_push() in a loop; rdm_ring_wait_writable(r, 0) when full. */
proctype producer()
{
	byte t = 0;  /* prod.tail */
	byte hc = 0; /* prod.head_cache */
	byte seen;
	bit f;
	do
	:: t == N -> break
	:: else ->
		/* rdm_ring_prod_room(r, 1): refresh the cache if it shows no room (A2) */
		if
		:: t - hc >= CAP -> hc = mem[HEAD]
		:: else -> skip
		fi;
		if
		:: t - hc < CAP ->
			/* rdm_ring_stage: write the slot, prod.tail++ */
			t++;
			publish(P, TAIL, t, CFLAG, C)
		:: else ->
			/* rdm_ring_wait_writable(r, 0): one poll, then sleep */
			hc = mem[HEAD];
			if
			:: t - hc < CAP -> skip
			:: else -> sleep_on(P, PFLAG, HEAD, t - CAP)
			fi
		fi
	od
}

/* rdm_ring_pop() in a loop; rdm_ring_wait_readable(r, 0) when empty. */
proctype consumer()
{
	byte h = 0;  /* cons.head */
	byte tc = 0; /* cons.tail_cache */
	byte seen;
	bit f;
	do
	:: h == N -> break
	:: else ->
		/* rdm_ring_cons_avail(r, 1): refresh the cache if it shows nothing (A1) */
		if
		:: tc == h -> tc = mem[TAIL]
		:: else -> skip
		fi;
		if
		:: tc != h ->
			/* read the slot, cons.head++ */
			assert(h == delivered);
			delivered++;
			h++;
			publish(C, HEAD, h, PFLAG, P)
		:: else ->
			/* rdm_ring_wait_readable(r, 0): one poll, then sleep */
			tc = mem[TAIL];
			if
			:: tc != h -> skip
			:: else -> sleep_on(C, CFLAG, TAIL, h)
			fi
		fi
	od;
	assert(delivered == N)
}

/* No lost wake-up: never both sides blocked in FUTEX_WAIT. */
active proctype monitor()
{
end:	atomic {
		(blocked[P] && blocked[C]) ->
			printf("LOST WAKE-UP: both sides asleep, tail %d head %d\n",
			       mem[TAIL], mem[HEAD]);
			assert(false)
	}
}

init
{
	atomic {
		run drain(P);
		run drain(C);
		run producer();
		run consumer()
	}
}
