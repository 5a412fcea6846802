/* Lab-only LD_PRELOAD shim for `sanlock daemon`: NOT for real hosts.
 *
 * sanlock raises RLIMIT_MEMLOCK, RLIMIT_RTPRIO and RLIMIT_CORE to unlimited at start and exits
 * when it cannot. The lab's sandbox has no CAP_SYS_RESOURCE, so those calls fail; this setrlimit
 * calls the real one and reports success for those three limits only (the daemon runs with
 * -l 0 -h 0, so it never needs the raised memlock or realtime limits).
 *
 * It also lets the lab cut a host's storage from sanlock: the daemon keeps its lease area open,
 * so hiding the file does not reach it. While the file named by XENHA_LAB_IO_CUT (default
 * /run/xenha-lab/storage-cut, in the host's own /run) exists, io_submit, through which sanlock
 * does all its disk I/O (libaio, the default -a 1), fails with EIO, as on a lost LUN.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#define IO_CUT_DEFAULT "/run/xenha-lab/storage-cut"

typedef int (*setrlimit_fn)(__rlimit_resource_t, const struct rlimit *);

int setrlimit(__rlimit_resource_t resource, const struct rlimit *rlim)
{
	static setrlimit_fn real;
	int rv;

	if (!real)
		real = (setrlimit_fn)dlsym(RTLD_NEXT, "setrlimit");
	rv = real(resource, rlim);
	if (rv != 0 && (resource == RLIMIT_MEMLOCK || resource == RLIMIT_RTPRIO ||
			resource == RLIMIT_CORE))
		return 0;
	return rv;
}

struct iocb;
typedef int (*io_submit_fn)(void *ctx, long nr, struct iocb **iocbs);

int io_submit(void *ctx, long nr, struct iocb **iocbs)
{
	static io_submit_fn real;
	const char *cut = getenv("XENHA_LAB_IO_CUT");

	if (!real)
		real = (io_submit_fn)dlsym(RTLD_NEXT, "io_submit");
	if (access(cut && *cut ? cut : IO_CUT_DEFAULT, F_OK) == 0)
		return -EIO; /* libaio's convention: a negative errno */
	return real(ctx, nr, iocbs);
}
