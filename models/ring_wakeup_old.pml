/*
 * models/ring_wakeup_old.pml - the wake-up protocol as it was before the fix
 * (kept so that the check is seen to fail): the waker, having seen a set
 * need-wakeup flag, cleared it with an exchange and woke only if that
 * returned 1. Spin finds the lost wake-up: the exchange comes late, after the
 * sleeper woke (the word had changed), took the record and set its flag for
 * its NEXT sleep; the exchange clears that flag, the FUTEX_WAKE lands before
 * the new FUTEX_WAIT, and the next publish sees no flag. Steps and memory
 * model: ring_wakeup.pml.
 */
#define OLD_PROTOCOL 1
#include "ring_wakeup.pml"
