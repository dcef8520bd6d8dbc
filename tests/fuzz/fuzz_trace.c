/* SPDX-License-Identifier: MIT */
/*
 * fuzz_trace - rdm-replay's trace parser (tools/replay/trace.c) on any bytes.
 *
 * Input: META '\0' CSV, or CSV alone. With a NUL byte the part before it is
 * the NAME.meta.json text and the geometry comes from it; without one there
 * is no meta file and the geometry is given as --block-size 4K
 * --region-size 1G would give it. The meta text also goes through
 * replay_json_get_u64() alone.
 *
 * Checks:
 *  - accepted: the geometry is sane (block size a power of two, region size a
 *    positive multiple of it); every request is block aligned, non-empty,
 *    inside the region, has a known op, and unplug_all covers the region;
 *    replay_trace_validate() agrees; the requests are the CSV's data lines,
 *    one each, and the seq column (read here, independently) strictly
 *    increases;
 *  - rejected: nothing is returned and the message is "fuzz.csv:LINE: problem"
 *    with LINE a line of the input, or "fuzz.csv: problem" only when the
 *    geometry itself (meta file or sizes) is what is wrong.
 */
#include "tools/replay/trace.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PATH "fuzz.csv"

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_trace: %s: %s\n", what, detail);
	abort();
}

/* The seq of each data line, read without the parser: digits up to the
 * first comma. Returns the number of data lines (after the header, up to the
 * first empty line) or SIZE_MAX if one has no plain decimal seq or anything
 * but line ends follows an empty line. */
static size_t scan_seqs(const char *csv, size_t len, uint64_t *seqs, size_t max)
{
	size_t line = 0, n = 0;
	const char *p = csv, *end = csv + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		line++;
		if (line > 1 && (le == p || (le - p == 1 && *p == '\r'))) {
			/* An empty line: only \r and \n may follow (the parser's
			 * rule for trailing empty lines). */
			for (const char *q = le; q < end; q++)
				if (*q != '\n' && *q != '\r')
					return SIZE_MAX;
			break;
		}
		if (line > 1) {
			uint64_t v = 0;
			const char *q = p;
			if (q == le || *q < '0' || *q > '9')
				return SIZE_MAX;
			while (q < le && *q >= '0' && *q <= '9')
				v = v * 10 + (uint64_t)(*q++ - '0');
			if (n < max)
				seqs[n] = v;
			n++;
		}
		p = nl ? nl + 1 : end;
	}
	return n;
}

static size_t count_lines(const char *csv, size_t len)
{
	size_t n = 1;
	for (size_t i = 0; i < len; i++)
		n += csv[i] == '\n';
	return n;
}

/* Does the meta text give a sane geometry (what the parser must accept)? */
static bool meta_geometry_ok(const char *meta)
{
	uint64_t bs, rs;
	if (!meta)
		return true; /* explicit 4K / 1G */
	if (replay_json_get_u64(meta, "block_size", &bs) != 0 ||
	    replay_json_get_u64(meta, "max_size", &rs) != 0)
		return false;
	return bs && !(bs & (bs - 1)) && rs && rs % bs == 0;
}

static void check_accepted(const struct replay_trace *t, const char *csv, size_t len)
{
	char err[REPLAY_ERR_LEN];
	uint64_t bs = t->block_size, rs = t->region_size;

	if (!bs || (bs & (bs - 1)) || !rs || rs % bs)
		fail("accepted a bad geometry", t->name);
	if (t->kind != REPLAY_KIND_TRACE || strcmp(t->name, "fuzz") != 0)
		fail("accepted trace has the wrong kind or name", t->name);
	for (size_t i = 0; i < t->n; i++) {
		const struct replay_req *r = &t->reqs[i];
		if (r->op > REPLAY_DISCARD_ALL)
			fail("unknown op accepted", "");
		if (r->length == 0 || r->offset % bs || r->length % bs)
			fail("unaligned or empty request accepted", "");
		if (r->offset > rs || r->length > rs - r->offset)
			fail("request outside the region accepted", "");
		if (r->op == REPLAY_DISCARD_ALL && (r->offset || r->length != rs))
			fail("unplug_all not covering the region accepted", "");
	}
	if (replay_trace_validate(t, err, sizeof(err)) != 0)
		fail("replay_trace_validate rejects a parsed trace", err);

	uint64_t *seqs = malloc((t->n + 1) * sizeof(*seqs));
	if (!seqs)
		abort();
	size_t n = scan_seqs(csv, len, seqs, t->n + 1);
	if (n != t->n)
		fail("request count differs from the data lines", "");
	for (size_t i = 1; i < n; i++)
		if (seqs[i] <= seqs[i - 1])
			fail("seq does not strictly increase", "");
	free(seqs);
}

static void check_rejected(const char *err, const char *meta, const char *csv, size_t len)
{
	size_t pl = strlen(PATH);

	if (strnlen(err, REPLAY_ERR_LEN) >= REPLAY_ERR_LEN)
		fail("message not terminated", "");
	if (strncmp(err, PATH ":", pl + 1) != 0)
		fail("message does not start with the file name", err);
	const char *p = err + pl + 1;
	if (*p == ' ') {
		/* "FILE: problem": only for a bad geometry. */
		if (meta_geometry_ok(meta))
			fail("message has no line number but the geometry is fine", err);
		if (p[1] == '\0')
			fail("empty problem", err);
		return;
	}
	char *e;
	unsigned long long line = strtoull(p, &e, 10);
	if (e == p || *e != ':' || e[1] != ' ' || e[2] == '\0')
		fail("message is not FILE:LINE: problem", err);
	if (line == 0 || line > count_lines(csv, len))
		fail("line number is not a line of the input", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	char *meta = NULL;
	const uint8_t *csv_bytes = data;
	size_t csv_len = size;
	struct replay_trace_opts opts = { .block_size = 4096, .region_size = 1ull << 30 };

	if (nul) {
		size_t ml = (size_t)(nul - data);
		meta = malloc(ml + 1);
		if (!meta)
			abort();
		memcpy(meta, data, ml + 1);
		csv_bytes = nul + 1;
		csv_len = size - ml - 1;
		opts = (struct replay_trace_opts){ 0 };

		/* The JSON reader alone, on keys present and absent. */
		uint64_t v;
		static const char *const keys[] = { "block_size", "max_size", "name", "", "a\"b" };
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			int rc = replay_json_get_u64(meta, keys[i], &v);
			if (rc != 0 && rc != -1 && rc != -2)
				fail("replay_json_get_u64 returned an unknown code", keys[i]);
		}
	}
	/* An exact-size copy: a read past the end is an ASan report. */
	char *csv = malloc(csv_len ? csv_len : 1);
	if (!csv)
		abort();
	memcpy(csv, csv_bytes, csv_len);

	struct replay_trace t;
	char err[REPLAY_ERR_LEN];
	memset(&t, 0xa5, sizeof(t));
	err[0] = '\0';
	int rc = replay_trace_parse(PATH, csv, csv_len, meta, nul ? NULL : &opts, &t, err, sizeof(err));
	if (rc == 0) {
		check_accepted(&t, csv, csv_len);
		replay_trace_free(&t);
	} else if (rc == -1) {
		check_rejected(err, meta, csv, csv_len);
	} else {
		fail("replay_trace_parse returned neither 0 nor -1", "");
	}
	free(csv);
	free(meta);
	return 0;
}
