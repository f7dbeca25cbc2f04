// hwpoison-case: map one page of a given kind, poison it with a given injector,
// touch it, and report what happened as JSON lines on the agent channel (fd 3).
//
// Usage: hwpoison-case --kind K --injector I --access A [--dir D] [--timeout S]
//   kinds:     anon, anon-clean, pagecache-clean, pagecache-dirty
//   injectors: madvise, madvise-soft, corrupt-pfn, host-srao, host-srar, none
//   access:    read, write, none
// Host injectors use a handshake on fd 3: the workload emits an
// "inject-request" event with the page's guest-physical address; for SRAO it
// waits for a line from the host, for SRAR it spins on the page in user mode
// until the machine check arrives (an SRAR must hit a user-mode access).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif
#ifndef MADV_SOFT_OFFLINE
#define MADV_SOFT_OFFLINE 101
#endif
#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#endif
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

#define PAGE 4096UL
#define CHAN 3

static sigjmp_buf jump;
static volatile sig_atomic_t armed;
static struct { int signo, code, lsb; uintptr_t addr; } last_sig;

static void on_sigbus(int signo, siginfo_t *si, void *uc)
{
	(void)uc;
	last_sig.signo = signo;
	last_sig.code = si->si_code;
	last_sig.addr = (uintptr_t)si->si_addr;
#ifdef si_addr_lsb
	last_sig.lsb = si->si_addr_lsb;
#endif
	if (armed) {
		armed = 0;
		siglongjmp(jump, 1);
	}
	_exit(99);
}

static int chan = CHAN;

static void emit(const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	for (int off = 0; off < n;) {
		ssize_t w = write(chan, buf + off, n - off);
		if (w <= 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		off += w;
	}
}

static void fail(const char *what)
{
	emit("{\"event\":\"setup-error\",\"what\":\"%s\",\"errno\":%d,\"error\":\"%s\"}",
	     what, errno, strerror(errno));
	exit(2);
}

static const char *code_name(int code)
{
	switch (code) {
	case BUS_MCEERR_AR: return "BUS_MCEERR_AR";
	case BUS_MCEERR_AO: return "BUS_MCEERR_AO";
	case BUS_ADRERR: return "BUS_ADRERR";
	case BUS_OBJERR: return "BUS_OBJERR";
	default: return "other";
	}
}

static void sig_json(char *out, size_t len, int got, uintptr_t page)
{
	if (!got) {
		snprintf(out, len, "null");
		return;
	}
	snprintf(out, len,
		 "{\"signo\":%d,\"code\":\"%s\",\"addr_is_page\":%s,\"addr_lsb\":%d}",
		 last_sig.signo, code_name(last_sig.code),
		 (last_sig.addr & ~(PAGE - 1)) == page ? "true" : "false", last_sig.lsb);
}

static uint64_t pfn_of(void *addr)
{
	uint64_t ent = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return 0;
	off_t off = ((uintptr_t)addr / PAGE) * sizeof(ent);
	if (pread(fd, &ent, sizeof(ent), off) != sizeof(ent))
		ent = 0;
	close(fd);
	if (!(ent & (1ULL << 63)))
		return 0;	/* not present */
	return ent & ((1ULL << 55) - 1);
}

static long hardware_corrupted_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "HardwareCorrupted: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void fill(unsigned char *p, unsigned seed)
{
	for (unsigned long i = 0; i < PAGE; i++)
		p[i] = (unsigned char)(i * 7 + seed);
}

static const char *check(const unsigned char *p, unsigned seed)
{
	int zero = 1, same = 1;
	for (unsigned long i = 0; i < PAGE; i++) {
		if (p[i] != (unsigned char)(i * 7 + seed))
			same = 0;
		if (p[i])
			zero = 0;
	}
	return same ? "intact" : zero ? "zeroed" : "changed";
}

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	int r = write(fd, s, strlen(s)) < 0 ? -errno : 0;
	close(fd);
	return r;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	/* static: these live across siglongjmp */
	static const char *kind = "anon", *injector = "madvise", *access_mode = "read";
	static const char *dir = "/mnt";
	static int timeout = 20;
	const unsigned seed = 0x5a;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--kind")) kind = argv[i + 1];
		else if (!strcmp(argv[i], "--injector")) injector = argv[i + 1];
		else if (!strcmp(argv[i], "--access")) access_mode = argv[i + 1];
		else if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
		else if (!strcmp(argv[i], "--timeout")) timeout = atoi(argv[i + 1]);
		else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
	}
	if (fcntl(chan, F_GETFD) < 0)
		chan = STDOUT_FILENO;

	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);

	unsigned char *page;
	int fd = -1;
	int is_file = !strncmp(kind, "pagecache", 9);
	if (!strcmp(kind, "anon") || !strcmp(kind, "anon-clean")) {
		page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (page == MAP_FAILED)
			fail("mmap");
		fill(page, seed);
	} else if (is_file) {
		char path[512];
		unsigned char buf[PAGE];
		snprintf(path, sizeof(path), "%s/hwpoison-case.dat", dir);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0)
			fail("open");
		if (!strcmp(kind, "pagecache-clean")) {
			fill(buf, seed);
			if (write(fd, buf, PAGE) != PAGE)
				fail("write");
			if (fsync(fd))
				fail("fsync");
		} else if (ftruncate(fd, PAGE)) {
			fail("ftruncate");
		}
		page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (page == MAP_FAILED)
			fail("mmap");
		if (!strcmp(kind, "pagecache-dirty"))
			fill(page, seed);
		else
			(void)*(volatile unsigned char *)page;
	} else {
		errno = EINVAL;
		fail("unknown kind");
	}

	uintptr_t addr = (uintptr_t)page;
	uint64_t pfn_before = pfn_of(page);
	long hc_before = hardware_corrupted_kb();
	emit("{\"event\":\"page\",\"kind\":\"%s\",\"vaddr\":\"%#lx\",\"pfn\":\"%#llx\","
	     "\"gpa\":\"%#llx\",\"hardware_corrupted_kb\":%ld}",
	     kind, (unsigned long)addr, (unsigned long long)pfn_before,
	     (unsigned long long)(pfn_before * PAGE), hc_before);

	/* inject */
	static int inject_rc, inject_errno, inject_sig;
	char sigbuf_inject[256], sigbuf_access[256];
	memset(&last_sig, 0, sizeof(last_sig));
	if (sigsetjmp(jump, 1) == 0) {
		armed = 1;
		if (!strcmp(injector, "madvise") || !strcmp(injector, "madvise-soft")) {
			int advice = strcmp(injector, "madvise") ? MADV_SOFT_OFFLINE : MADV_HWPOISON;
			inject_rc = madvise(page, PAGE, advice);
			inject_errno = inject_rc ? errno : 0;
		} else if (!strcmp(injector, "corrupt-pfn")) {
			char s[32];
			snprintf(s, sizeof(s), "%#llx\n", (unsigned long long)pfn_before);
			inject_rc = write_str("/sys/kernel/debug/hwpoison/corrupt-pfn", s);
			inject_errno = -inject_rc;
		} else if (!strcmp(injector, "host-srao")) {
			char line[64] = "";
			emit("{\"event\":\"inject-request\",\"mode\":\"srao\",\"gpa\":\"%#llx\"}",
			     (unsigned long long)(pfn_before * PAGE));
			ssize_t n = read(chan, line, sizeof(line) - 1);
			if (n <= 0)
				fail("handshake");
			/* SRAO is handled from a work queue: wait until the kernel counts it */
			double end = now() + timeout;
			while (hardware_corrupted_kb() == hc_before && now() < end)
				usleep(20000);
		} else if (!strcmp(injector, "host-srar")) {
			emit("{\"event\":\"inject-request\",\"mode\":\"srar\",\"gpa\":\"%#llx\"}",
			     (unsigned long long)(pfn_before * PAGE));
			double end = now() + timeout;
			unsigned long sum = 0;
			while (now() < end)
				for (long i = 0; i < (1L << 22); i++)
					sum += ((volatile unsigned char *)page)[i & (PAGE - 1)];
			inject_rc = -1;
			inject_errno = ETIMEDOUT;
		} else if (strcmp(injector, "none")) {
			errno = EINVAL;
			fail("unknown injector");
		}
		armed = 0;
	} else {
		inject_sig = 1;
	}
	sig_json(sigbuf_inject, sizeof(sigbuf_inject), inject_sig, addr);
	long hc_after_inject = hardware_corrupted_kb();

	/* access */
	static int access_sig;
	static const char *data = "unchecked";
	memset(&last_sig, 0, sizeof(last_sig));
	if (sigsetjmp(jump, 1) == 0) {
		armed = 1;
		if (!strcmp(access_mode, "read"))
			data = check(page, seed);
		else if (!strcmp(access_mode, "write")) {
			fill(page, seed + 1);
			data = "written";
		}
		armed = 0;
	} else {
		access_sig = 1;
		data = "unreadable";
	}
	sig_json(sigbuf_access, sizeof(sigbuf_access), access_sig, addr);

	uint64_t pfn_after = access_sig ? 0 : pfn_of(page);
	int fsync_errno = -1;
	if (is_file)
		fsync_errno = fsync(fd) ? errno : 0;

	emit("{\"event\":\"result\",\"kind\":\"%s\",\"injector\":\"%s\",\"access\":\"%s\","
	     "\"inject_rc\":%d,\"inject_errno\":%d,\"inject_signal\":%s,\"access_signal\":%s,"
	     "\"data\":\"%s\",\"pfn_before\":\"%#llx\",\"pfn_after\":\"%#llx\","
	     "\"hardware_corrupted_kb_before\":%ld,\"hardware_corrupted_kb_after_inject\":%ld,"
	     "\"fsync_errno\":%d}",
	     kind, injector, access_mode, inject_rc, inject_errno, sigbuf_inject,
	     sigbuf_access, data, (unsigned long long)pfn_before,
	     (unsigned long long)pfn_after, hc_before, hc_after_inject, fsync_errno);
	return 0;
}
