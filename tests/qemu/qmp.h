/* tests/qemu/qmp.h - a minimal QMP client (QEMU's JSON monitor on a unix socket). */
#ifndef RDM_TESTS_QEMU_QMP_H
#define RDM_TESTS_QEMU_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qmp {
	int fd;
	char buf[65536]; /* bytes read, not yet returned as a line */
	size_t len;
	char reply[65536]; /* the last command's reply line */
	unsigned events;   /* event lines skipped */
};

/* Connect to path (retrying up to timeout_ms while QEMU creates it), read the greeting and
 * negotiate capabilities. 0 or a negative errno. */
int qmp_open(struct qmp *q, const char *path, int timeout_ms);
void qmp_close(struct qmp *q);
/* Send one command (a JSON object, printf format) and wait for its reply, skipping events. 0 on
 * a "return", -EPROTO on an "error" (q->reply holds it), another negative errno otherwise. */
int qmp_cmd(struct qmp *q, int timeout_ms, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* qom-get of an integer property. */
int qmp_qom_get_u64(struct qmp *q, const char *path, const char *prop, uint64_t *val);
/* qom-set of an integer property. */
int qmp_qom_set_u64(struct qmp *q, const char *path, const char *prop, uint64_t val);

#endif
