/* SPDX-License-Identifier: MIT */
/*
 * tools/replay/trace.h - workloads as request lists: the CSV trace format,
 * its meta file, sizes with K/M/G suffixes, and --scale.
 *
 * A workload is a region geometry (block size, region size) and a list of
 * requests in the order the guest issued them. A request's seq is its index.
 */
#ifndef RDM_REPLAY_TRACE_H
#define RDM_REPLAY_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum replay_op {
	REPLAY_POPULATE = 0,    /* CSV "plug"       */
	REPLAY_DISCARD = 1,     /* CSV "unplug"     */
	REPLAY_DISCARD_ALL = 2, /* CSV "unplug_all" */
};

struct replay_req {
	uint64_t offset; /* bytes from the start of the region, block aligned */
	uint64_t length; /* bytes, > 0, block aligned */
	uint32_t op;     /* enum replay_op */
};

/* How a workload was made; chooses extra runs (the async storm run). */
enum replay_kind {
	REPLAY_KIND_TRACE = 0,
	REPLAY_KIND_SBM,
	REPLAY_KIND_BBM,
	REPLAY_KIND_RESET,
	REPLAY_KIND_REGISTER,
	REPLAY_KIND_STORM,
	REPLAY_KIND_FRAG,
	REPLAY_KIND_KZONE,
};

struct replay_trace {
	char name[96];
	uint32_t kind;        /* enum replay_kind */
	uint64_t block_size;  /* power of two */
	uint64_t region_size; /* multiple of block_size */
	struct replay_req *reqs;
	size_t n, cap;
};

/* Explicit geometry (0 = take it from NAME.meta.json). */
struct replay_trace_opts {
	uint64_t block_size;
	uint64_t region_size;
};

/* Messages name the file, the line and the problem; err gets one of them. */
#define REPLAY_ERR_LEN 512

/* Format a message into err (if non-NULL) and return -1: the error
 * convention of the parser and the generators. */
int replay_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Read a CSV trace. The whole file is parsed and checked before this returns:
 * on any problem nothing is kept, err names file, line and problem, and -1
 * is returned. 0 on success; t must be freed with replay_trace_free().
 */
int replay_trace_load(const char *path, const struct replay_trace_opts *opts, struct replay_trace *t,
		      char *err, size_t errlen);

/* The same from a string (path only names it in messages); meta is NULL or the meta JSON text. */
int replay_trace_parse(const char *path, const char *text, size_t len, const char *meta,
		       const struct replay_trace_opts *opts, struct replay_trace *t, char *err,
		       size_t errlen);

/*
 * The minimal JSON reader for NAME.meta.json: the value of a top-level key
 * that is a non-negative integer. Whitespace and key order do not matter;
 * strings (with escapes), arrays and objects of other keys are skipped.
 * Returns 0, -1 if the key is missing, -2 if the JSON is malformed or the
 * value is not an integer that fits 64 bits.
 */
int replay_json_get_u64(const char *json, const char *key, uint64_t *out);

/* "4096", "2M", "1G", "64K", "1T" (powers of 1024). 0 or -1. */
int replay_parse_size(const char *s, uint64_t *out);
/* Format bytes as the shortest exact "NK/M/G/T" or plain number. */
const char *replay_fmt_size(uint64_t v, char *buf, size_t len);

/* Append a request (aborts on out of memory: a tool, not the library). */
void replay_trace_push(struct replay_trace *t, uint32_t op, uint64_t offset, uint64_t length);
void replay_trace_free(struct replay_trace *t);

/*
 * Check the geometry and that every request is aligned and inside the region
 * (the parser's checks, for generated workloads). 0 or -1 with err.
 */
int replay_trace_validate(const struct replay_trace *t, char *err, size_t errlen);

/* Divide every offset, length, the block and region size by div; -1 with err if one is not divisible. */
int replay_trace_scale(struct replay_trace *t, uint64_t div, char *err, size_t errlen);

const char *replay_op_name(uint32_t op);

#endif
