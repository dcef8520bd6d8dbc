/* SPDX-License-Identifier: MIT */
/* tools/replay/trace.c - the CSV trace parser, the meta JSON reader, sizes and --scale. */
#include "tools/replay/trace.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int replay_errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

const char *replay_op_name(uint32_t op)
{
	switch (op) {
	case REPLAY_POPULATE: return "plug";
	case REPLAY_DISCARD: return "unplug";
	case REPLAY_DISCARD_ALL: return "unplug_all";
	default: return "?";
	}
}

void replay_trace_push(struct replay_trace *t, uint32_t op, uint64_t offset, uint64_t length)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 256;
		struct replay_req *r = realloc(t->reqs, cap * sizeof(*r));

		if (!r) {
			fprintf(stderr, "rdm-replay: out of memory\n");
			abort();
		}
		t->reqs = r;
		t->cap = cap;
	}
	t->reqs[t->n++] = (struct replay_req){ .offset = offset, .length = length, .op = op };
}

void replay_trace_free(struct replay_trace *t)
{
	free(t->reqs);
	t->reqs = NULL;
	t->n = t->cap = 0;
}

/* Strict unsigned decimal: digits only, no sign, no overflow. */
static int parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int replay_parse_size(const char *s, uint64_t *out)
{
	size_t len = s ? strlen(s) : 0;
	unsigned shift = 0;
	uint64_t v;

	if (len == 0)
		return -1;
	switch (s[len - 1]) {
	case 'k': case 'K': shift = 10; break;
	case 'm': case 'M': shift = 20; break;
	case 'g': case 'G': shift = 30; break;
	case 't': case 'T': shift = 40; break;
	default: break;
	}
	if (shift)
		len--;
	if (parse_u64(s, len, &v) < 0)
		return -1;
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = v << shift;
	return 0;
}

const char *replay_fmt_size(uint64_t v, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	int u = -1;

	while (v && u < 3 && (v & 1023) == 0) {
		v >>= 10;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%" PRIu64, v);
	else
		snprintf(buf, len, "%" PRIu64 "%c", v, units[u]);
	return buf;
}

/* ---------------------------------------------------------------- JSON */

struct jr {
	const char *p;
};

static void jr_ws(struct jr *j)
{
	while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
		j->p++;
}

/* Skip a string; if key, compare its (unescaped-free) content with key. */
static int jr_string(struct jr *j, const char *key, bool *match)
{
	const char *start;

	if (*j->p != '"')
		return -1;
	start = ++j->p;
	bool escaped = false;
	while (*j->p && *j->p != '"') {
		if (*j->p == '\\') {
			escaped = true;
			if (!*++j->p)
				return -1;
		} else if ((unsigned char)*j->p < 0x20) {
			return -1;
		}
		j->p++;
	}
	if (*j->p != '"')
		return -1;
	if (match)
		*match = key && !escaped && strlen(key) == (size_t)(j->p - start) &&
			 memcmp(start, key, (size_t)(j->p - start)) == 0;
	j->p++;
	return 0;
}

static int jr_value(struct jr *j, int depth);

static int jr_literal(struct jr *j)
{
	static const char *const lits[] = { "true", "false", "null" };

	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(lits[i]);
		if (strncmp(j->p, lits[i], n) == 0) {
			j->p += n;
			return 0;
		}
	}
	/* A number: JSON's grammar, loosely (the values we do not read). */
	const char *s = j->p;
	if (*j->p == '-')
		j->p++;
	while (isdigit((unsigned char)*j->p) || *j->p == '.' || *j->p == 'e' || *j->p == 'E' ||
	       *j->p == '+' || *j->p == '-')
		j->p++;
	return j->p > s && isdigit((unsigned char)j->p[-1]) ? 0 : -1;
}

static int jr_container(struct jr *j, int depth, char close, bool object)
{
	j->p++;
	jr_ws(j);
	if (*j->p == close) {
		j->p++;
		return 0;
	}
	for (;;) {
		jr_ws(j);
		if (object) {
			if (jr_string(j, NULL, NULL) < 0)
				return -1;
			jr_ws(j);
			if (*j->p++ != ':')
				return -1;
		}
		if (jr_value(j, depth + 1) < 0)
			return -1;
		jr_ws(j);
		if (*j->p == ',') {
			j->p++;
			continue;
		}
		if (*j->p == close) {
			j->p++;
			return 0;
		}
		return -1;
	}
}

static int jr_value(struct jr *j, int depth)
{
	if (depth > 64)
		return -1;
	jr_ws(j);
	switch (*j->p) {
	case '"': return jr_string(j, NULL, NULL);
	case '{': return jr_container(j, depth, '}', true);
	case '[': return jr_container(j, depth, ']', false);
	default: return jr_literal(j);
	}
}

int replay_json_get_u64(const char *json, const char *key, uint64_t *out)
{
	struct jr j = { .p = json };
	int found = -1;

	jr_ws(&j);
	if (*j.p != '{')
		return -2;
	j.p++;
	jr_ws(&j);
	if (*j.p == '}')
		goto end;
	for (;;) {
		bool match = false;

		jr_ws(&j);
		if (jr_string(&j, key, &match) < 0)
			return -2;
		jr_ws(&j);
		if (*j.p++ != ':')
			return -2;
		jr_ws(&j);
		if (match) {
			const char *s = j.p;
			while (isdigit((unsigned char)*j.p))
				j.p++;
			if (*j.p == '.' || *j.p == 'e' || *j.p == 'E' || *j.p == '-' ||
			    parse_u64(s, (size_t)(j.p - s), out) < 0)
				return -2;
			found = 0;
		} else if (jr_value(&j, 1) < 0) {
			return -2;
		}
		jr_ws(&j);
		if (*j.p == ',') {
			j.p++;
			continue;
		}
		if (*j.p == '}')
			break;
		return -2;
	}
end:
	j.p++;
	jr_ws(&j);
	return *j.p ? -2 : found;
}

/* ---------------------------------------------------------------- CSV */

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;

	if (!f)
		return NULL;
	for (;;) {
		if (cap - n < 65536) {
			cap = cap ? cap * 2 : 1 << 20;
			char *b = realloc(buf, cap + 1);
			if (!b) {
				free(buf);
				fclose(f);
				errno = ENOMEM;
				return NULL;
			}
			buf = b;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		fclose(f);
		errno = EIO;
		return NULL;
	}
	fclose(f);
	buf[n] = '\0';
	*len = n;
	return buf;
}

static bool is_pow2(uint64_t v)
{
	return v && (v & (v - 1)) == 0;
}

static int check_geometry(const char *what, uint64_t bs, uint64_t rs, char *err, size_t errlen)
{
	if (!is_pow2(bs))
		return replay_errf(err, errlen, "%s: block size %" PRIu64 " is not a power of two", what, bs);
	if (rs == 0 || rs % bs)
		return replay_errf(err, errlen, "%s: region size %" PRIu64 " is not a positive multiple of the block size %" PRIu64,
			    what, rs, bs);
	return 0;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

int replay_trace_parse(const char *path, const char *text, size_t len, const char *meta,
		       const struct replay_trace_opts *opts, struct replay_trace *t, char *err,
		       size_t errlen)
{
	static const char header[] = "seq,op,offset_bytes,length_bytes";
	struct replay_trace tr = { .kind = REPLAY_KIND_TRACE };
	const char *p = text, *end = text + len;
	uint64_t bs = opts ? opts->block_size : 0, rs = opts ? opts->region_size : 0;
	uint64_t prev_seq = 0;
	size_t lineno = 0;
	const char *bn = base_name(path);
	size_t bl = strlen(bn);

	if (bl > 4 && strcmp(bn + bl - 4, ".csv") == 0)
		bl -= 4;
	snprintf(tr.name, sizeof(tr.name), "%.*s", (int)bl, bn);

	if (!bs || !rs) {
		uint64_t v;
		int rc;

		if (!meta) {
			size_t pl = strlen(path);

			if (pl >= 4 && strcmp(path + pl - 4, ".csv") == 0)
				pl -= 4;
			return replay_errf(err, errlen,
				    "%s: no %s: the meta file %.*s.meta.json is missing; give --block-size and --region-size",
				    path, !bs ? "block size" : "region size", (int)pl, path);
		}
		if (!bs) {
			rc = replay_json_get_u64(meta, "block_size", &v);
			if (rc < 0)
				return replay_errf(err, errlen, "%s: meta file: %s \"block_size\"", path,
					    rc == -1 ? "no key" : "malformed JSON or non-integer");
			bs = v;
		}
		if (!rs) {
			rc = replay_json_get_u64(meta, "max_size", &v);
			if (rc < 0)
				return replay_errf(err, errlen, "%s: meta file: %s \"max_size\"", path,
					    rc == -1 ? "no key" : "malformed JSON or non-integer");
			rs = v;
		}
	}
	if (check_geometry(path, bs, rs, err, errlen) < 0)
		return -1;
	tr.block_size = bs;
	tr.region_size = rs;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		size_t ll = (size_t)(le - p);
		const char *f[5];
		size_t fl[5], nf = 0;

		lineno++;
		if (ll && p[ll - 1] == '\r')
			ll--;
		if (lineno == 1) {
			if (ll != sizeof(header) - 1 || memcmp(p, header, ll) != 0) {
				replay_trace_free(&tr);
				return replay_errf(err, errlen, "%s:1: wrong header: expected \"%s\"", path, header);
			}
			goto next;
		}
		if (ll == 0) {
			/* Only trailing empty lines are allowed. */
			const char *q = le;
			while (q < end && (*q == '\n' || *q == '\r'))
				q++;
			if (q == end)
				break;
			replay_trace_free(&tr);
			return replay_errf(err, errlen, "%s:%zu: empty line", path, lineno);
		}
		for (const char *s = p;;) {
			const char *c = memchr(s, ',', (size_t)(p + ll - s));
			const char *fe = c ? c : p + ll;
			if (nf < 5) {
				f[nf] = s;
				fl[nf] = (size_t)(fe - s);
			}
			nf++;
			if (!c)
				break;
			s = c + 1;
		}
		if (nf != 4) {
			replay_trace_free(&tr);
			return replay_errf(err, errlen, "%s:%zu: %zu columns, expected 4 (seq,op,offset_bytes,length_bytes)",
				    path, lineno, nf);
		}
		uint64_t seq, off, lenb;
		uint32_t op;
		if (parse_u64(f[0], fl[0], &seq) < 0) {
			replay_trace_free(&tr);
			return replay_errf(err, errlen, "%s:%zu: seq \"%.*s\" is not an unsigned integer", path, lineno,
				    (int)fl[0], f[0]);
		}
		if (fl[1] == 4 && memcmp(f[1], "plug", 4) == 0) {
			op = REPLAY_POPULATE;
		} else if (fl[1] == 6 && memcmp(f[1], "unplug", 6) == 0) {
			op = REPLAY_DISCARD;
		} else if (fl[1] == 10 && memcmp(f[1], "unplug_all", 10) == 0) {
			op = REPLAY_DISCARD_ALL;
		} else {
			replay_trace_free(&tr);
			return replay_errf(err, errlen, "%s:%zu: unknown op \"%.*s\" (plug, unplug or unplug_all)", path,
				    lineno, (int)fl[1], f[1]);
		}
		if (parse_u64(f[2], fl[2], &off) < 0) {
			replay_trace_free(&tr);
			return replay_errf(err, errlen, "%s:%zu: offset_bytes \"%.*s\" is not an unsigned integer", path,
				    lineno, (int)fl[2], f[2]);
		}
		if (parse_u64(f[3], fl[3], &lenb) < 0) {
			replay_trace_free(&tr);
			return replay_errf(err, errlen, "%s:%zu: length_bytes \"%.*s\" is not an unsigned integer", path,
				    lineno, (int)fl[3], f[3]);
		}
		if (tr.n && seq <= prev_seq) {
			replay_trace_free(&tr);
			return replay_errf(err, errlen, "%s:%zu: seq %" PRIu64 " does not increase (previous %" PRIu64 ")",
				    path, lineno, seq, prev_seq);
		}
		prev_seq = seq;
		if (lenb == 0) {
			replay_trace_free(&tr);
			return replay_errf(err, errlen, "%s:%zu: zero length", path, lineno);
		}
		if (off % bs || lenb % bs) {
			replay_trace_free(&tr);
			return replay_errf(err, errlen,
				    "%s:%zu: range [%" PRIu64 ", +%" PRIu64 ") is not aligned to the block size %" PRIu64,
				    path, lineno, off, lenb, bs);
		}
		if (off > rs || lenb > rs - off) {
			replay_trace_free(&tr);
			return replay_errf(err, errlen,
				    "%s:%zu: range [%" PRIu64 ", +%" PRIu64 ") is outside the region of %" PRIu64 " bytes",
				    path, lineno, off, lenb, rs);
		}
		if (op == REPLAY_DISCARD_ALL && (off != 0 || lenb != rs)) {
			replay_trace_free(&tr);
			return replay_errf(err, errlen, "%s:%zu: unplug_all must have offset 0 and length = region size %" PRIu64,
				    path, lineno, rs);
		}
		replay_trace_push(&tr, op, off, lenb);
next:
		p = nl ? nl + 1 : end;
	}
	if (lineno == 0) {
		replay_trace_free(&tr);
		return replay_errf(err, errlen, "%s:1: empty file: expected the header \"%s\"", path, header);
	}
	*t = tr;
	return 0;
}

int replay_trace_load(const char *path, const struct replay_trace_opts *opts, struct replay_trace *t,
		      char *err, size_t errlen)
{
	size_t len = 0, mlen = 0, pl = strlen(path);
	char *text = read_file(path, &len), *meta = NULL;
	int rc;

	if (!text)
		return replay_errf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
	if (!opts || !opts->block_size || !opts->region_size) {
		char *mp = malloc(pl + 16);

		if (!mp) {
			free(text);
			return replay_errf(err, errlen, "%s: out of memory", path);
		}
		if (pl >= 4 && strcmp(path + pl - 4, ".csv") == 0)
			pl -= 4;
		snprintf(mp, pl + 16, "%.*s.meta.json", (int)pl, path);
		meta = read_file(mp, &mlen);
		free(mp);
	}
	rc = replay_trace_parse(path, text, len, meta, opts, t, err, errlen);
	free(meta);
	free(text);
	return rc;
}

int replay_trace_validate(const struct replay_trace *t, char *err, size_t errlen)
{
	if (check_geometry(t->name, t->block_size, t->region_size, err, errlen) < 0)
		return -1;
	for (size_t i = 0; i < t->n; i++) {
		const struct replay_req *r = &t->reqs[i];

		if (r->op > REPLAY_DISCARD_ALL || r->length == 0 || r->offset % t->block_size ||
		    r->length % t->block_size || r->offset > t->region_size ||
		    r->length > t->region_size - r->offset)
			return replay_errf(err, errlen, "%s: request %zu (%s [%" PRIu64 ", +%" PRIu64 ")) is malformed", t->name,
				    i, replay_op_name(r->op), r->offset, r->length);
	}
	return 0;
}

int replay_trace_scale(struct replay_trace *t, uint64_t div, char *err, size_t errlen)
{
	if (div <= 1)
		return 0;
	if (t->block_size % div || t->region_size % div)
		return replay_errf(err, errlen, "%s: --scale %" PRIu64 " does not divide the block size %" PRIu64
			    " and region size %" PRIu64, t->name, div, t->block_size, t->region_size);
	for (size_t i = 0; i < t->n; i++)
		if (t->reqs[i].offset % div || t->reqs[i].length % div)
			return replay_errf(err, errlen, "%s: request %zu: --scale %" PRIu64 " does not divide [%" PRIu64
				    ", +%" PRIu64 ")", t->name, i, div, t->reqs[i].offset, t->reqs[i].length);
	t->block_size /= div;
	t->region_size /= div;
	for (size_t i = 0; i < t->n; i++) {
		t->reqs[i].offset /= div;
		t->reqs[i].length /= div;
	}
	return 0;
}
