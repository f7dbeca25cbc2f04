// SPDX-License-Identifier: GPL-2.0
/*
 * A test program from outside the kernel tree, in the manner of mce-test's tinjpage: poison
 * an anonymous page with madvise(MADV_HWPOISON), touch it, and report in KTAP what the
 * kernel did. It holds on every kernel the farm ships: the SIGBUS may come with the
 * injection (6.12: madvise_inject_error passes MF_ACTION_REQUIRED) or at the access after
 * it (6.1), but it is BUS_MCEERR_AR at the page either way, and HardwareCorrupted grows by
 * the page.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

static sigjmp_buf jump;
static volatile int code;
static void *volatile addr;

static void on_sigbus(int sig, siginfo_t *info, void *uc)
{
	code = info->si_code;
	addr = info->si_addr;
	siglongjmp(jump, 1);
}

static long hardware_corrupted_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "HardwareCorrupted: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

int main(void)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	long size = sysconf(_SC_PAGESIZE), before = hardware_corrupted_kb();
	char *page = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int ok;

	printf("TAP version 13\n1..2\n");
	if (page == MAP_FAILED) {
		printf("Bail out! mmap: %s\n", strerror(errno));
		return 1;
	}
	memset(page, 0x5a, size);
	sigaction(SIGBUS, &sa, NULL);
	if (!sigsetjmp(jump, 1)) {
		if (madvise(page, size, MADV_HWPOISON)) {
			printf("Bail out! madvise(MADV_HWPOISON): %s\n", strerror(errno));
			return 1;
		}
		(void)*(volatile char *)page;
	}
	ok = code == BUS_MCEERR_AR && addr == page;
	printf("%s 1 SIGBUS BUS_MCEERR_AR at the poisoned page (si_code %d)\n", ok ? "ok" : "not ok",
	       code);
	ok = hardware_corrupted_kb() - before == size / 1024;
	printf("%s 2 HardwareCorrupted grew by the page (%ld kB to %ld kB)\n", ok ? "ok" : "not ok",
	       before, hardware_corrupted_kb());
	return 0;
}
