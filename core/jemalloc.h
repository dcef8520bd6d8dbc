/* SPDX-License-Identifier: MIT */
/*
 * core/jemalloc.h - jemalloc's explicit API, referenced weakly.
 *
 * Debian's jemalloc has no symbol prefix: whoever links it gets its malloc.
 * rdm must not choose the malloc of the program it is linked into, so it
 * uses jemalloc only through mallocx/sdallocx/mallctl on arenas of its own,
 * and references those weakly:
 *   - librdm.so records libjemalloc.so.2 as a dependency (meson.build) but
 *     comes before it in the program's symbol lookup order only after the
 *     program's own libc, so malloc stays glibc's (tests/core/test_malloc);
 *     its weak references resolve to libjemalloc's API.
 *   - librdm.a adds no jemalloc to the link: a program that links jemalloc
 *     itself (its own choice of malloc) gives rdm the API; one that does not
 *     leaves the references NULL, and rdm allocates with malloc instead
 *     (rdm_have_jemalloc() false; placement by first touch, rdm/numa.h).
 * Only compiled with RDM_HAVE_JEMALLOC (headers present, not a sanitizer
 * build).
 */
#ifndef RDM_CORE_JEMALLOC_H
#define RDM_CORE_JEMALLOC_H

#include <stdbool.h>

#ifdef RDM_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>

#pragma weak mallocx
#pragma weak sdallocx
#pragma weak mallctl

static inline bool rdm_have_jemalloc(void)
{
	return &mallocx != 0 && &sdallocx != 0 && &mallctl != 0;
}
#else
static inline bool rdm_have_jemalloc(void)
{
	return false;
}
#endif

#endif /* RDM_CORE_JEMALLOC_H */
