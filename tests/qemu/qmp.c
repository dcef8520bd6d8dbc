/* tests/qemu/qmp.c - a minimal QMP client: one command at a time, replies read a line each. */
#include "qmp.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The next line QEMU sent (without its newline) into q->reply. */
static int read_line(struct qmp *q, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;

	for (;;) {
		char *nl = memchr(q->buf, '\n', q->len);
		if (nl) {
			size_t n = (size_t)(nl - q->buf);
			if (n >= sizeof(q->reply))
				return -EMSGSIZE;
			memcpy(q->reply, q->buf, n);
			q->reply[n] = 0;
			memmove(q->buf, nl + 1, q->len - n - 1);
			q->len -= n + 1;
			return 0;
		}
		if (q->len == sizeof(q->buf))
			return -EMSGSIZE;
		int left = (int)(end - now_ms());
		struct pollfd p = { .fd = q->fd, .events = POLLIN };
		if (left <= 0 || poll(&p, 1, left) == 0)
			return -ETIMEDOUT;
		ssize_t r = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);
		if (r <= 0)
			return r == 0 ? -ECONNRESET : -errno;
		q->len += (size_t)r;
	}
}

int qmp_open(struct qmp *q, const char *path, int timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t end = now_ms() + timeout_ms;
	int ret;

	memset(q, 0, sizeof(*q));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	for (;;) {
		q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (q->fd < 0)
			return -errno;
		if (!connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)))
			break;
		ret = -errno;
		close(q->fd);
		q->fd = -1;
		if (now_ms() >= end)
			return ret;
		usleep(50000);
	}
	ret = read_line(q, timeout_ms); /* {"QMP": {...}} */
	if (!ret && !strstr(q->reply, "\"QMP\""))
		ret = -EPROTO;
	if (!ret)
		ret = qmp_cmd(q, timeout_ms, "{\"execute\":\"qmp_capabilities\"}");
	if (ret)
		qmp_close(q);
	return ret;
}

void qmp_close(struct qmp *q)
{
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
}

int qmp_cmd(struct qmp *q, int timeout_ms, const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int n, ret;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd) - 1)
		return -EMSGSIZE;
	cmd[n++] = '\n';
	for (int off = 0; off < n;) {
		ssize_t w = write(q->fd, cmd + off, (size_t)(n - off));
		if (w < 0)
			return -errno;
		off += (int)w;
	}
	for (;;) {
		ret = read_line(q, timeout_ms);
		if (ret)
			return ret;
		if (!strncmp(q->reply, "{\"return\"", 9))
			return 0;
		if (!strncmp(q->reply, "{\"error\"", 8))
			return -EPROTO;
		q->events++; /* {"timestamp": ..., "event": ...} */
	}
}

int qmp_qom_get_u64(struct qmp *q, const char *path, const char *prop, uint64_t *val)
{
	char *end;
	int ret = qmp_cmd(q, 30000, "{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"%s\",\"property\":\"%s\"}}",
			  path, prop);

	if (ret)
		return ret;
	errno = 0;
	*val = strtoull(q->reply + 10, &end, 0); /* {"return": 1234} */
	return errno || end == q->reply + 10 ? -EPROTO : 0;
}

int qmp_qom_set_u64(struct qmp *q, const char *path, const char *prop, uint64_t val)
{
	return qmp_cmd(q, 30000,
		       "{\"execute\":\"qom-set\",\"arguments\":{\"path\":\"%s\",\"property\":\"%s\",\"value\":%" PRIu64 "}}",
		       path, prop, val);
}
