/* test_malloc.c - linking librdm leaves the program's malloc alone: built three ways (librdm.so; librdm.a without jemalloc; and, as the control that shows the check can fail, librdm.a with the program itself choosing jemalloc), it asks the dynamic linker whose malloc it got and checks that rdm still works and places memory as documented. */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <rdm/rdm.h>

#include "tests/check.h"

/* WANT_MALLOC: the object whose malloc the program must get ("libc.so.6",
 * or "libjemalloc" in the control). WANT_BOUND: 0 if region memory must not
 * be bound through a jemalloc arena, 2 if it must be whenever NUMA policy
 * calls work here. */
#ifndef WANT_MALLOC
#error "build with -DWANT_MALLOC=..."
#endif

int main(void)
{
	void *(*m)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "malloc");
	Dl_info di;
	struct rdm_region_config rc = {.struct_size = sizeof(rc), .size = 64ull << 21, .block_size = 2ull << 20};
	struct rdm_region *r;
	struct rdm_placement pl = {.struct_size = sizeof(pl)};
	/* What libnuma's numa_available() asks. */
	int numa_on = syscall(SYS_get_mempolicy, NULL, NULL, 0, NULL, 0) == 0;

	REQUIRE(m != NULL);
	REQUIRE(dladdr((void *)m, &di) != 0 && di.dli_fname != NULL);
	printf("test_malloc[%s]: malloc comes from %s\n", VARIANT, di.dli_fname);
	CHECK(strstr(di.dli_fname, WANT_MALLOC) != NULL);
	/* The call the program makes resolves to the same function. */
	CHECK((void *)m == (void *)malloc);

	REQUIRE(rdm_region_create(&rc, &r) == 0);
	for (unsigned i = 0; i < 64; i += 2)
		CHECK(rdm_populate(r, (uint64_t)i << 21, 2ull << 20) == 0);
	REQUIRE(rdm_region_get_placement(r, &pl) == 0);
	printf("test_malloc[%s]: region state %llu bytes, %llu pages on node %d, bound %s\n", VARIANT,
	       (unsigned long long)pl.bytes, (unsigned long long)pl.pages_on_node, pl.node,
	       pl.flags & RDM_PLACE_BOUND ? "yes" : "no");
	CHECK(pl.pages_on_node > 0 && pl.pages_elsewhere == 0);
	CHECK(!!(pl.flags & RDM_PLACE_BOUND) == (WANT_BOUND == 2 && numa_on));
	CHECK(rdm_region_destroy(r) == 0);
	return check_exit();
}
