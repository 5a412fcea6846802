/* Lab-only LD_PRELOAD shim for `sanlock daemon`: NOT for real hosts.
 *
 * sanlock raises RLIMIT_MEMLOCK, RLIMIT_RTPRIO and RLIMIT_CORE to unlimited at start and exits
 * when it cannot. The lab's sandbox has no CAP_SYS_RESOURCE, so those calls fail; this setrlimit
 * calls the real one and reports success for those three limits only (the daemon runs with
 * -l 0 -h 0, so it never needs the raised memlock or realtime limits).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/resource.h>

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
