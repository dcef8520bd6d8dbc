/* test_error.c - the thread-local error message and the log hook. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "tests/check.h"

static int logged;
static char last_logged[256];

static void handler(void *opaque, enum rdm_log_level level, const char *msg)
{
	(void)opaque;
	(void)level;
	logged++;
	snprintf(last_logged, sizeof(last_logged), "%s", msg);
}

static void *other_thread(void *arg)
{
	(void)arg;
	CHECK(strcmp(rdm_last_error(), "") == 0);
	CHECK(rdm_fail(-ERANGE, "other thread") == -ERANGE);
	CHECK(strcmp(rdm_last_error(), "other thread") == 0);
	return NULL;
}

int main(void)
{
	pthread_t t;

	CHECK(strcmp(rdm_last_error(), "") == 0);
	CHECK(rdm_fail(-EINVAL, "bad %s %d", "thing", 7) == -EINVAL);
	CHECK(strcmp(rdm_last_error(), "bad thing 7") == 0);

	/* The message is per thread. */
	CHECK(pthread_create(&t, NULL, other_thread, NULL) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(strcmp(rdm_last_error(), "bad thing 7") == 0);

	/* Nothing is logged without a handler; with one, up to its level. */
	rdm_set_log_handler(handler, NULL, RDM_LOG_DEBUG);
	rdm_fail(-ENOENT, "now logged");
	CHECK(logged == 1 && strcmp(last_logged, "now logged") == 0);
	rdm_set_log_handler(handler, NULL, RDM_LOG_WARNING);
	rdm_fail(-ENOENT, "below the level");
	CHECK(logged == 1);
	rdm_log(RDM_LOG_ERROR, "worker event %d", 3);
	CHECK(logged == 2 && strcmp(last_logged, "worker event 3") == 0);
	rdm_set_log_handler(NULL, NULL, RDM_LOG_DEBUG);
	rdm_log(RDM_LOG_ERROR, "dropped");
	CHECK(logged == 2);
	return check_exit();
}
