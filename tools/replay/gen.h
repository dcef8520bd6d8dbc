/* SPDX-License-Identifier: MIT */
/*
 * tools/replay/gen.h - built-in workload generators (DESIGN.md "Workloads").
 *
 * Each generator has named parameters with defaults and a seed; the same
 * parameters and seed give the same requests. Every generated workload is
 * strict (populate only of discarded blocks, discard only of populated ones).
 */
#ifndef RDM_REPLAY_GEN_H
#define RDM_REPLAY_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tools/replay/trace.h"

#define REPLAY_GEN_MAX_PARAMS 10

struct replay_gen_param {
	const char *name;
	uint64_t def;
	bool is_size;     /* accepts K/M/G/T suffixes */
	const char *help;
};

struct replay_generator {
	const char *name;
	const char *help;
	uint32_t kind; /* enum replay_kind */
	const struct replay_gen_param *params;
	size_t nparams;
	/* v[i] is the value of params[i]. 0 or -1 with err. */
	int (*generate)(const uint64_t *v, uint64_t seed, struct replay_trace *t, char *err, size_t errlen);
};

extern const struct replay_generator replay_generators[];
extern const size_t replay_ngenerators;

/*
 * The default built-in workloads, as --workload specs: what runs when no
 * trace is given, or with --workload all.
 */
extern const char *const replay_default_workloads[];

/*
 * Make a workload from a spec "NAME[:KEY=VALUE[,KEY=VALUE...]]". The
 * workload's name is NAME, with "-d<density>" for frag, and ":KEY=VALUE..."
 * appended for non-default parameters otherwise. 0, or -1 with err naming the
 * unknown generator, key or bad value.
 */
int replay_generate(const char *spec, uint64_t seed, struct replay_trace *t, char *err, size_t errlen);

/*
 * Test hook of the kzone generator (all NULL normally). next_req is the index
 * of the request the event precedes (the trace's length at that moment).
 * mark: a device block became unmovable (true) or movable again (false).
 * step: an operator step asks to plug (true) or unplug `blocks` device blocks.
 */
struct replay_kzone_hook {
	void (*mark)(void *opaque, uint64_t block, bool unmovable, size_t next_req);
	void (*step)(void *opaque, size_t next_req, bool plug, uint64_t blocks);
	void *opaque;
};
extern struct replay_kzone_hook replay_kzone_hook;

/* Individual generators, for tests: v as in struct replay_generator. */
const struct replay_generator *replay_find_generator(const char *name);

#endif
