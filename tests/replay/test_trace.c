/* test_trace.c - rdm-replay's trace parser, meta JSON reader, sizes and --scale. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/check.h"
#include "tools/replay/trace.h"

static const char meta[] = "{ \"name\": \"x\", \"argv\": [\"a,\\\"b\", {\"k\": [1, 2]}], \"block_size\" : 2097152,\n"
			   "  \"max_size\":16777216, \"memaddr\": 4294967296 }";

static int parse(const char *text, const char *m, const struct replay_trace_opts *o, struct replay_trace *t,
		 char *err)
{
	return replay_trace_parse("t.csv", text, strlen(text), m, o, t, err, REPLAY_ERR_LEN);
}

/* The parse fails and the message contains every fragment. */
static void bad(const char *text, const char *m, const char *frag1, const char *frag2)
{
	struct replay_trace t = { 0 };
	char err[REPLAY_ERR_LEN] = "";

	CHECK(parse(text, m, NULL, &t, err) == -1);
	CHECK(t.reqs == NULL && t.n == 0);
	if (!strstr(err, frag1) || (frag2 && !strstr(err, frag2))) {
		fprintf(stderr, "message \"%s\" lacks \"%s\"/\"%s\"\n", err, frag1, frag2 ? frag2 : "");
		check_failures++;
	}
}

static void test_good(void)
{
	struct replay_trace t;
	char err[REPLAY_ERR_LEN];
	const char *text = "seq,op,offset_bytes,length_bytes\r\n"
			   "0,plug,0,8388608\r\n"
			   "1,unplug,2097152,2097152\n"
			   "5,unplug_all,0,16777216\n\n";

	REQUIRE(parse(text, meta, NULL, &t, err) == 0);
	CHECK(strcmp(t.name, "t") == 0);
	CHECK(t.block_size == 2097152 && t.region_size == 16777216);
	REQUIRE(t.n == 3);
	CHECK(t.reqs[0].op == REPLAY_POPULATE && t.reqs[0].offset == 0 && t.reqs[0].length == 8388608);
	CHECK(t.reqs[1].op == REPLAY_DISCARD && t.reqs[1].offset == 2097152);
	CHECK(t.reqs[2].op == REPLAY_DISCARD_ALL);
	replay_trace_free(&t);

	/* Overrides win over the meta file, and make it unnecessary. */
	struct replay_trace_opts o = { .block_size = 1 << 20, .region_size = 1 << 26 };
	REQUIRE(parse("seq,op,offset_bytes,length_bytes\n0,plug,1048576,1048576", NULL, &o, &t, err) == 0);
	CHECK(t.block_size == 1 << 20 && t.region_size == 1 << 26 && t.n == 1);
	replay_trace_free(&t);

	/* A header-only file is an empty workload. */
	REQUIRE(parse("seq,op,offset_bytes,length_bytes\n", meta, NULL, &t, err) == 0);
	CHECK(t.n == 0);
	replay_trace_free(&t);
}

static void test_bad(void)
{
	const char *h = "seq,op,offset_bytes,length_bytes\n";
	char buf[512];

	bad("seq,op,offset,length\n0,plug,0,2097152\n", meta, "t.csv:1:", "wrong header");
	bad("", meta, "t.csv:1:", "empty file");
	snprintf(buf, sizeof(buf), "%s0,plug,0\n", h);
	bad(buf, meta, "t.csv:2:", "3 columns");
	snprintf(buf, sizeof(buf), "%s0,plug,0,2097152,7\n", h);
	bad(buf, meta, "t.csv:2:", "5 columns");
	snprintf(buf, sizeof(buf), "%s0,plug,0,2097152\n1,merge,0,2097152\n", h);
	bad(buf, meta, "t.csv:3:", "unknown op \"merge\"");
	snprintf(buf, sizeof(buf), "%s0,plug,0x10,2097152\n", h);
	bad(buf, meta, "t.csv:2:", "offset_bytes \"0x10\"");
	snprintf(buf, sizeof(buf), "%s0,plug,0,-5\n", h);
	bad(buf, meta, "t.csv:2:", "length_bytes \"-5\"");
	snprintf(buf, sizeof(buf), "%sx,plug,0,2097152\n", h);
	bad(buf, meta, "t.csv:2:", "seq \"x\"");
	snprintf(buf, sizeof(buf), "%s0,plug,0,99999999999999999999999\n", h);
	bad(buf, meta, "t.csv:2:", "not an unsigned integer");
	snprintf(buf, sizeof(buf), "%s0,plug,4096,2097152\n", h);
	bad(buf, meta, "t.csv:2:", "not aligned");
	snprintf(buf, sizeof(buf), "%s0,plug,0,3145728\n", h);
	bad(buf, meta, "t.csv:2:", "not aligned");
	snprintf(buf, sizeof(buf), "%s0,plug,14680064,4194304\n", h);
	bad(buf, meta, "t.csv:2:", "outside the region");
	snprintf(buf, sizeof(buf), "%s0,plug,18446744073707454464,4194304\n", h);
	bad(buf, meta, "t.csv:2:", "outside the region");
	snprintf(buf, sizeof(buf), "%s0,plug,0,0\n", h);
	bad(buf, meta, "t.csv:2:", "zero length");
	snprintf(buf, sizeof(buf), "%s0,plug,0,2097152\n0,unplug,0,2097152\n", h);
	bad(buf, meta, "t.csv:3:", "does not increase");
	snprintf(buf, sizeof(buf), "%s3,plug,0,2097152\n2,unplug,0,2097152\n", h);
	bad(buf, meta, "t.csv:3:", "does not increase");
	snprintf(buf, sizeof(buf), "%s0,unplug_all,0,2097152\n", h);
	bad(buf, meta, "t.csv:2:", "unplug_all");
	snprintf(buf, sizeof(buf), "%s0,plug,0,2097152\n\n1,unplug,0,2097152\n", h);
	bad(buf, meta, "t.csv:3:", "empty line");
	/* A malformed line late in the file: nothing is kept. */
	snprintf(buf, sizeof(buf), "%s0,plug,0,2097152\n1,unplug,0,2097152\n2,plug,0,2097152\n3,plug,0,1\n", h);
	bad(buf, meta, "t.csv:5:", "not aligned");
	/* Geometry. */
	snprintf(buf, sizeof(buf), "%s0,plug,0,2097152\n", h);
	bad(buf, NULL, "t.meta.json is missing", "--block-size");
	bad(buf, "{\"block_size\": 2097152}", "max_size", NULL);
	bad(buf, "{\"block_size\": 3000000, \"max_size\": 6000000}", "not a power of two", NULL);
	bad(buf, "{\"block_size\": 2097152, \"max_size\": 3000000}", "multiple of the block size", NULL);
	bad(buf, "{\"block_size\": 2097152, \"max_size\": 1.5e9}", "max_size", NULL);
	bad(buf, "{\"block_size\": 2097152, \"max_size\": 4194304", "malformed", NULL);
}

static void test_load(void)
{
	char dir[] = "/tmp/rdm-replay-testXXXXXX", path[256], mpath[256], err[REPLAY_ERR_LEN];
	struct replay_trace t;
	FILE *f;

	REQUIRE(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/T.csv", dir);
	snprintf(mpath, sizeof(mpath), "%s/T.meta.json", dir);
	f = fopen(path, "w");
	REQUIRE(f);
	fputs("seq,op,offset_bytes,length_bytes\n0,plug,0,4194304\n", f);
	fclose(f);
	CHECK(replay_trace_load(path, NULL, &t, err, sizeof(err)) == -1);
	CHECK(strstr(err, "T.meta.json is missing") != NULL);
	f = fopen(mpath, "w");
	REQUIRE(f);
	fputs(meta, f);
	fclose(f);
	REQUIRE(replay_trace_load(path, NULL, &t, err, sizeof(err)) == 0);
	CHECK(strcmp(t.name, "T") == 0 && t.n == 1 && t.region_size == 16777216);
	replay_trace_free(&t);
	CHECK(replay_trace_load("/nonexistent/x.csv", NULL, &t, err, sizeof(err)) == -1);
	CHECK(strstr(err, "/nonexistent/x.csv: cannot read") != NULL);
	unlink(path);
	unlink(mpath);
	rmdir(dir);
}

static void test_json_sizes_scale(void)
{
	uint64_t v = 0;
	char err[REPLAY_ERR_LEN], buf[32];

	CHECK(replay_json_get_u64(meta, "max_size", &v) == 0 && v == 16777216);
	CHECK(replay_json_get_u64(" {\n\"max_size\"\t:\n7 } \n", "max_size", &v) == 0 && v == 7);
	CHECK(replay_json_get_u64("{\"a\": \"max_size\", \"b\": 1}", "max_size", &v) == -1);
	CHECK(replay_json_get_u64("{\"max_size\": -1}", "max_size", &v) == -2);
	CHECK(replay_json_get_u64("{\"max_size\": 1} x", "max_size", &v) == -2);
	CHECK(replay_json_get_u64("[1]", "max_size", &v) == -2);

	CHECK(replay_parse_size("2M", &v) == 0 && v == 2 << 20);
	CHECK(replay_parse_size("4k", &v) == 0 && v == 4096);
	CHECK(replay_parse_size("1T", &v) == 0 && v == UINT64_C(1) << 40);
	CHECK(replay_parse_size("123", &v) == 0 && v == 123);
	CHECK(replay_parse_size("M", &v) == -1);
	CHECK(replay_parse_size("2X", &v) == -1);
	CHECK(replay_parse_size("99999999999T", &v) == -1);
	CHECK(strcmp(replay_fmt_size(2 << 20, buf, sizeof(buf)), "2M") == 0);
	CHECK(strcmp(replay_fmt_size(4097, buf, sizeof(buf)), "4097") == 0);

	struct replay_trace t = { .block_size = 1 << 21, .region_size = 1 << 24 };
	replay_trace_push(&t, REPLAY_POPULATE, 1 << 21, 1 << 22);
	CHECK(replay_trace_scale(&t, 3, err, sizeof(err)) == -1);
	CHECK(t.block_size == 1 << 21);
	CHECK(replay_trace_scale(&t, 64, err, sizeof(err)) == 0);
	CHECK(t.block_size == 1 << 15 && t.region_size == 1 << 18 && t.reqs[0].offset == 1 << 15 &&
	      t.reqs[0].length == 1 << 16);
	CHECK(replay_trace_validate(&t, err, sizeof(err)) == 0);
	t.reqs[0].offset = 1 << 18;
	CHECK(replay_trace_validate(&t, err, sizeof(err)) == -1);
	replay_trace_free(&t);
}

int main(void)
{
	test_good();
	test_bad();
	test_load();
	test_json_sizes_scale();
	return check_exit();
}
