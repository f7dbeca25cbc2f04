// provoke: make the kernel report something through LKDTM, the kernel's own crash provoker
// (CONFIG_LKDTM, in the debug layer), so that the farm records a real report of each kind for
// its console parser's tests (scripts/record-kernel-reports).
//
// Usage: provoke TYPE   (an LKDTM crash type: WARNING, BUG, REFCOUNT_DEC_ZERO, ...)
// Reports {"event":"provoke","type":...,"errno":...} on the agent channel (fd 3) when the
// write returns; many types never return, and the console says why.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *direct = "/sys/kernel/debug/provoke-crash/DIRECT";
	if (argc != 2 || strspn(argv[1], "ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789") != strlen(argv[1])) {
		dprintf(3, "{\"event\":\"setup-error\",\"what\":\"usage: provoke TYPE\"}\n");
		return 2;
	}
	int fd = open(direct, O_WRONLY);
	if (fd < 0) {
		dprintf(3, "{\"event\":\"setup-error\",\"what\":\"open %s\",\"errno\":%d}\n", direct,
			errno);
		return 2;
	}
	ssize_t n = write(fd, argv[1], strlen(argv[1]));
	int err = n < 0 ? errno : 0;
	dprintf(3, "{\"event\":\"provoke\",\"type\":\"%s\",\"errno\":%d}\n", argv[1], err);
	close(fd);
	return 0;
}
