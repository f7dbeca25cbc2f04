// hwpoison-case: get one page of a given kind, poison it with a given injector, touch it,
// and report what happened as JSON lines on the agent channel (fd 3).
//
// Usage: hwpoison-case --kind K --injector I --access A [--dir D] [--timeout S] [--cleanup unpoison]
//        hwpoison-case --kind K --injector I --race ACTION [--rounds N] [--seed S] [--dir D]
//   kinds:     anon anon-clean mlocked pagecache-clean pagecache-dirty file-hole shmem sysv-shm
//              swap-clean swap-dirty thp-head thp-tail hugetlb-anon hugetlb-file ksm
//              anon-shared-fork writeback free-buddy kernel vdso
//   injectors: madvise madvise-soft corrupt-pfn hard-offline soft-offline mce-inject
//              host-srao host-srar host-srar-kernel none
//   access:    read write none, or a comma-separated list of steps, each one way a program
//              meets the page again (README: access steps): read write remap-read remap-write
//              private-read pread pwrite child-read populate-read after-drop-caches
//              truncate-extend fsync. A first step of read, write or none is the classic
//              access (access_signal, data); every other step reports a "step" event.
// Host injectors use a handshake on fd 3: the workload emits an "inject-request" event with
// the page's guest-physical address. For SRAO it waits for the host's line; for SRAR it
// spins on the page in user mode until the machine check arrives (an SRAR must hit a
// user-mode access); for SRAR in kernel mode it sleeps in the kernel until the end. On a
// guest with several vCPUs it first pins itself to the one it runs on, and names it in the
// request: the host's machine check must land on that vCPU.
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
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <pthread.h>
#include <sched.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif
#ifndef MADV_SOFT_OFFLINE
#define MADV_SOFT_OFFLINE 101
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_FREE
#define MADV_FREE 8
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MFD_HUGETLB
#define MFD_HUGETLB 4U
#endif
#ifndef BUS_MCEERR_AR
#define BUS_MCEERR_AR 4
#endif
#ifndef BUS_MCEERR_AO
#define BUS_MCEERR_AO 5
#endif

#define PAGE 4096UL
#define HUGE (2UL << 20)
#define CHAN 3
#define KPF_WRITEBACK 8
#define KPF_BUDDY 10
#define KPF_THP 22
#define KPF_KSM 21
#define KPF_HWPOISON 19
#define MAX_STEPS 16

/* Per thread: a race's racer thread touches pages too, and each catches its own SIGBUS. */
static __thread sigjmp_buf jump;
static __thread volatile sig_atomic_t armed;
struct sig_seen { int signo, code, lsb; uintptr_t addr; };
static __thread volatile struct sig_seen last_sig;
static volatile struct sig_seen early_sig;

static void on_sigbus(int signo, siginfo_t *si, void *uc)
{
	(void)uc;
	if (!armed && si->si_code == BUS_MCEERR_AO) {
		/* an early kill: advisory, delivered outside any access; note it and go on */
		early_sig.signo = signo;
		early_sig.code = si->si_code;
		early_sig.addr = (uintptr_t)si->si_addr;
		early_sig.lsb = si->si_addr_lsb;
		return;
	}
	last_sig.signo = signo;
	last_sig.code = si->si_code;
	last_sig.addr = (uintptr_t)si->si_addr;
	last_sig.lsb = si->si_addr_lsb;
	if (armed) {
		armed = 0;
		siglongjmp(jump, 1);
	}
	_exit(99);
}

static int chan = CHAN;

static void emit(const char *fmt, ...)
{
	char buf[4096];
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

static void sig_json(char *out, size_t len, int got, int code, uintptr_t addr, int lsb,
		     uintptr_t page)
{
	if (!got) {
		snprintf(out, len, "null");
		return;
	}
	snprintf(out, len, "{\"code\":\"%s\",\"addr_is_page\":%s,\"addr_lsb\":%d}",
		 code_name(code), page && (addr & ~(PAGE - 1)) == page ? "true" : "false", lsb);
}

static uint64_t pagemap_entry(void *addr)
{
	uint64_t ent = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		return 0;
	if (pread(fd, &ent, sizeof(ent), ((uintptr_t)addr / PAGE) * sizeof(ent)) != sizeof(ent))
		ent = 0;
	close(fd);
	return ent;
}

static uint64_t pfn_of(void *addr)
{
	uint64_t ent = pagemap_entry(addr);
	if (!(ent & (1ULL << 63)))
		return 0;	/* not present */
	return ent & ((1ULL << 55) - 1);
}

static int swapped(void *addr)
{
	return !!(pagemap_entry(addr) & (1ULL << 62));
}

static uint64_t kpageflags(uint64_t pfn)
{
	uint64_t flags = 0;
	int fd = open("/proc/kpageflags", O_RDONLY);
	if (fd < 0)
		return 0;
	if (pread(fd, &flags, sizeof(flags), pfn * sizeof(flags)) != sizeof(flags))
		flags = 0;
	close(fd);
	return flags;
}

/* A /proc/meminfo field. Only system calls and the stack, no stdio: the SIGBUS handler
 * may siglongjmp out of the wait loops that call this, and a jump out of malloc (inside
 * fopen) leaves the heap broken: the workload once died of SIGSEGV that way. */
static long meminfo(const char *key)
{
	char buf[8192];
	ssize_t n, got = 0;
	int fd = open("/proc/meminfo", O_RDONLY);
	if (fd < 0)
		return -1;
	while (got < (ssize_t)sizeof(buf) - 1 &&
	       (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += n;
	close(fd);
	buf[got] = 0;
	size_t len = strlen(key);
	for (char *line = buf, *nl; *line; line = nl + 1) {
		if (!strncmp(line, key, len) && line[len] == ':')
			return strtol(line + len + 1, NULL, 10);
		if (!(nl = strchr(line, '\n')))
			break;
	}
	return -1;
}

static long hardware_corrupted_kb(void)
{
	return meminfo("HardwareCorrupted");
}

/* Frames the kernel has marked poisoned (KPF_HWPOISON), all of memory. */
static long poisoned_frames(void)
{
	static uint64_t flags[4096];
	long n = 0;
	ssize_t got;
	off_t off = 0;
	int fd = open("/proc/kpageflags", O_RDONLY);
	if (fd < 0)
		return -1;
	while ((got = pread(fd, flags, sizeof(flags), off)) > 0) {
		for (ssize_t i = 0; i < got / (ssize_t)sizeof(uint64_t); i++)
			n += !!(flags[i] & (1ULL << KPF_HWPOISON));
		off += got;
	}
	close(fd);
	return n;
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

static int write_num(const char *path, const char *fmt, unsigned long long v)
{
	char s[64];
	snprintf(s, sizeof(s), fmt, v);
	return write_str(path, s);
}

static void fill(unsigned char *p, unsigned seed)
{
	for (unsigned long i = 0; i < PAGE; i++)
		p[i] = (unsigned char)(i * 7 + seed);
}

static const char *check(const unsigned char *p, unsigned seed, int zero_expected)
{
	int zero = 1, same = 1;
	for (unsigned long i = 0; i < PAGE; i++) {
		if (p[i] != (unsigned char)(i * 7 + seed))
			same = 0;
		if (p[i])
			zero = 0;
	}
	if (zero_expected)
		return zero ? "intact" : "changed";
	return same ? "intact" : zero ? "zeroed" : "changed";
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Move to the guest's last vCPU and stay there, and say which: a host SRAR must hit that
 * one (the last, not the first, so that a farm that always injected on vCPU 0 is caught). */
static int pin_here(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	int cpu = n > 1 ? (int)n - 1 : 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		return sched_getcpu() < 0 ? 0 : sched_getcpu();
	return sched_getcpu() < 0 ? cpu : sched_getcpu();
}

/* The page under test. */
struct target {
	unsigned char *page;	/* NULL for kinds with no mapping (free-buddy, kernel) */
	uint64_t pfn;
	int fd;			/* the file behind a file-backed kind, or -1 */
	unsigned char *map;	/* the whole mapping the page is in, and its length */
	size_t map_len;
	off_t off;		/* the page's offset in the file */
	int shmid;		/* sysv-shm: the segment, for a new attach; else -1 */
	int zero;		/* the page's original content is zeros (a file hole) */
	pid_t sibling;		/* anon-shared-fork: the child sharing the page */
	int to_sibling, from_sibling;
	const char *note;	/* what the set-up found, for the result */
};

static const unsigned seed = 0x5a;

static unsigned char *map_anon(size_t len)
{
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				-1, 0);
	if (p == MAP_FAILED)
		fail("mmap");
	return p;
}

static unsigned char *map_file(struct target *t, const char *path, int flags, size_t len)
{
	t->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | flags, 0600);
	if (t->fd < 0)
		fail("open");
	if (ftruncate(t->fd, len))
		fail("ftruncate");
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
	if (p == MAP_FAILED)
		fail("mmap");
	t->map = p;
	t->map_len = len;
	return p;
}

/* Read the page through a mapping: intact, zeroed, changed, or unreadable (SIGBUS). */
static const char *read_page(unsigned char *page)
{
	static __thread const char *data;
	memset((void *)&last_sig, 0, sizeof(last_sig));
	if (sigsetjmp(jump, 1) == 0) {
		armed = 1;
		data = check(page, seed, 0);
		armed = 0;
	} else {
		data = "unreadable";
	}
	return data;
}

/* The child of anon-shared-fork: waits, touches the shared page, reports its signal. */
static void sibling(unsigned char *page, int in, int out)
{
	char c, buf[128];
	ssize_t n;
	while ((n = read(in, &c, 1)) < 0 && errno == EINTR)
		;	/* an early-kill signal (BUS_MCEERR_AO) interrupts the wait */
	if (n != 1)
		_exit(0);
	const char *data = read_page(page);
	snprintf(buf, sizeof(buf), "%s %s %s\n", early_sig.signo ? code_name(early_sig.code) : "-",
		 last_sig.signo ? code_name(last_sig.code) : "-", data);
	if (write(out, buf, strlen(buf)) < 0)
		_exit(1);
	_exit(0);
}

static void setup_anon(const char *kind, const char *dir, struct target *t)
{
	if (!strcmp(kind, "mlockall") && mlockall(MCL_CURRENT | MCL_FUTURE))
		fail("mlockall");
	t->page = map_anon(PAGE);
	fill(t->page, seed);
	if (!strcmp(kind, "mlocked") && mlock(t->page, PAGE))
		fail("mlock");
	if (!strcmp(kind, "anon-clean") && madvise(t->page, PAGE, MADV_FREE))
		fail("madvise(MADV_FREE)");
}

static void setup_map_locked(const char *kind, const char *dir, struct target *t)
{
	t->page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
	if (t->page == MAP_FAILED)
		fail("mmap(MAP_LOCKED)");
	fill(t->page, seed);
}

static void setup_pagecache(const char *kind, const char *dir, struct target *t)
{
	char path[512];
	unsigned char buf[PAGE];
	snprintf(path, sizeof(path), "%s/hwpoison-case.dat", dir);
	t->page = map_file(t, path, 0, PAGE);
	if (!strcmp(kind, "pagecache-clean")) {
		fill(buf, seed);
		if (pwrite(t->fd, buf, PAGE, 0) != PAGE || fsync(t->fd))
			fail("write+fsync");
		(void)*(volatile unsigned char *)t->page;
	} else {
		fill(t->page, seed);
	}
	if (!strcmp(kind, "writeback")) {
		/* start writeback; the throttled disk keeps the page under it */
		if (sync_file_range(t->fd, 0, PAGE, SYNC_FILE_RANGE_WRITE))
			fail("sync_file_range");
	}
}

static void setup_file_hole(const char *kind, const char *dir, struct target *t)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/hwpoison-case.hole", dir);
	t->page = map_file(t, path, 0, 16 * PAGE);
	t->off = 8 * PAGE;
	t->page += t->off;	/* a hole in the middle of a sparse file */
	(void)*(volatile unsigned char *)t->page;
	t->zero = 1;
}

static void setup_shmem(const char *kind, const char *dir, struct target *t)
{
	t->page = map_file(t, "/tmp/hwpoison-case.shm", 0, PAGE);
	fill(t->page, seed);
}

static void setup_memfd(const char *kind, const char *dir, struct target *t)
{
	t->fd = memfd_create("hwpoison-case", 0);
	if (t->fd < 0 || ftruncate(t->fd, PAGE))
		fail("memfd_create");
	t->page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
	if (t->page == MAP_FAILED)
		fail("mmap(memfd)");
	t->map = t->page;
	t->map_len = PAGE;
	fill(t->page, seed);
}

static void setup_sysv_shm(const char *kind, const char *dir, struct target *t)
{
	/* kept until the guest ends, so that a step can attach it again */
	t->shmid = shmget(IPC_PRIVATE, PAGE, IPC_CREAT | 0600);
	if (t->shmid < 0)
		fail("shmget");
	t->page = shmat(t->shmid, NULL, 0);
	if (t->page == (void *)-1)
		fail("shmat");
	fill(t->page, seed);
}

static void setup_swap(const char *kind, const char *dir, struct target *t)
{
	t->page = map_anon(PAGE);
	fill(t->page, seed);
	if (madvise(t->page, PAGE, MADV_PAGEOUT))
		fail("madvise(MADV_PAGEOUT)");
	if (!swapped(t->page)) {
		errno = ENOSPC;
		fail("page not swapped out (no swap device?)");
	}
	/* a read fault brings it back into the swap cache, mapped writable but clean */
	(void)*(volatile unsigned char *)t->page;
	if (!strcmp(kind, "swap-dirty")) {
		/* A write through /proc/self/mem marks the folio dirty (set_page_dirty_lock)
		 * while it stays in the swap cache; a plain store would only dirty the PTE. */
		int mem = open("/proc/self/mem", O_RDWR);
		if (mem < 0 || pwrite(mem, t->page, PAGE, (off_t)(uintptr_t)t->page) != PAGE)
			fail("write /proc/self/mem");
		close(mem);
	}
}

static void setup_thp(const char *kind, const char *dir, struct target *t)
{
	write_str("/sys/kernel/mm/transparent_hugepage/enabled", "always");
	unsigned char *raw = map_anon(2 * HUGE);
	unsigned char *huge = (unsigned char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
	madvise(huge, HUGE, MADV_HUGEPAGE);
	for (unsigned long off = 0; off < HUGE; off += PAGE)
		fill(huge + off, seed);
	t->page = huge + (!strcmp(kind, "thp-tail") ? 5 * PAGE : 0);
	t->map = raw;
	t->map_len = 2 * HUGE;
	if (!(kpageflags(pfn_of(t->page)) & (1ULL << KPF_THP))) {
		errno = ENOMEM;
		fail("no transparent huge page");
	}
}

static void setup_hugetlb(const char *kind, const char *dir, struct target *t)
{
	if (meminfo("HugePages_Free") < 2)	/* a race's rounds set more aside */
		write_str("/proc/sys/vm/nr_hugepages", "2");
	if (!strcmp(kind, "hugetlb-anon")) {
		t->page = mmap(NULL, HUGE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	} else {
		t->fd = memfd_create("hwpoison-case", MFD_HUGETLB);
		if (t->fd < 0 || ftruncate(t->fd, HUGE))
			fail("memfd_create(MFD_HUGETLB)");
		t->page = mmap(NULL, HUGE, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
		t->map = t->page;
		t->map_len = HUGE;
	}
	if (t->page == MAP_FAILED)
		fail("mmap(hugetlb)");
	t->map = t->page;
	t->map_len = HUGE;
	for (unsigned long off = 0; off < HUGE; off += PAGE)
		fill(t->page + off, seed);
}

static void setup_ksm(const char *kind, const char *dir, struct target *t)
{
	write_str("/sys/kernel/mm/ksm/sleep_millisecs", "10");
	write_str("/sys/kernel/mm/ksm/run", "1");
	unsigned char *two = map_anon(2 * PAGE);
	fill(two, seed);
	fill(two + PAGE, seed);
	if (madvise(two, 2 * PAGE, MADV_MERGEABLE))
		fail("madvise(MADV_MERGEABLE)");
	double end = now() + 20;
	while (pfn_of(two) != pfn_of(two + PAGE) && now() < end)
		usleep(20000);
	if (pfn_of(two) != pfn_of(two + PAGE)) {
		errno = ETIMEDOUT;
		fail("ksmd did not merge the pages");
	}
	t->page = two;
	t->map = two;
	t->map_len = 2 * PAGE;
}

static void setup_anon_shared_fork(const char *kind, const char *dir, struct target *t)
{
	int down[2], up[2];
	t->page = map_anon(PAGE);
	fill(t->page, seed);
	if (pipe(down) || pipe(up))
		fail("pipe");
	t->sibling = fork();
	if (t->sibling < 0)
		fail("fork");
	if (t->sibling == 0) {
		close(down[1]);
		close(up[0]);
		sibling(t->page, down[0], up[1]);
	}
	close(down[0]);
	close(up[1]);
	t->to_sibling = down[1];
	t->from_sibling = up[0];
}

static void setup_free_buddy(const char *kind, const char *dir, struct target *t)
{
	/* the highest head page of a free buddy block: nothing allocates it meanwhile */
	uint64_t flags[512];
	int fd = open("/proc/kpageflags", O_RDONLY);
	ssize_t n;
	for (uint64_t base = 0; fd >= 0 && (n = pread(fd, flags, sizeof(flags),
				base * sizeof(uint64_t))) > 0; base += n / sizeof(uint64_t))
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(uint64_t); i++)
			if (flags[i] & (1ULL << KPF_BUDDY))
				t->pfn = base + i;
	if (fd >= 0)
		close(fd);
	if (!t->pfn) {
		errno = ENOENT;
		fail("no free buddy page in /proc/kpageflags");
	}
}

static void setup_vdso(const char *kind, const char *dir, struct target *t)
{
	/* A page of the kernel's own image that every process maps: the vDSO. Its last
	 * page, code: its first holds the ELF header that every new program reads. */
	unsigned char *v = (unsigned char *)getauxval(AT_SYSINFO_EHDR);
	char line[256];
	unsigned long start, end, len = PAGE;
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "[vdso]") && sscanf(line, "%lx-%lx", &start, &end) == 2)
			len = end - start;
	if (f)
		fclose(f);
	if (!v) {
		errno = ENOENT;
		fail("no vDSO (AT_SYSINFO_EHDR)");
	}
	t->page = v + len - PAGE;
	(void)*(volatile unsigned char *)t->page;	/* mapped, for its PFN */
}

static void setup_kernel(const char *kind, const char *dir, struct target *t)
{
	/* a page of kernel text, from /proc/iomem (real addresses for root) */
	char line[256];
	unsigned long start = 0, end;
	FILE *f = fopen("/proc/iomem", "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "Kernel code") && sscanf(line, " %lx-%lx", &start, &end) == 2)
			break;
	if (f)
		fclose(f);
	if (!start) {
		errno = ENOENT;
		fail("no 'Kernel code' in /proc/iomem");
	}
	t->pfn = start / PAGE + 16;
}

/* ---- the registry: every page kind and injector, declared once ----
 * A page kind is a row here and a setup function above; `hwpoison-case --list` prints the
 * registry as JSON, and the farm's tests hold orchestrator/config.py and the README to it. */
#define K_DISK 1	/* the page is on the ext2 disk (/mnt) */
#define K_SWAP 2	/* it needs a swap device */
#define K_UNMAPPED 4	/* no mapping: only a PFN, nothing to touch afterwards */
#define K_UNTOUCHED 8	/* mapped but not the workload's own (the vDSO): never touched */
#define K_FILE 16	/* a file is behind it: every access step applies */
#define K_RACE 32	/* race mode sets it up afresh each round */
#define K_HUGETLB 64	/* a page of the hugetlb pool, which a poisoned one leaves when freed */
#define K_THP 128	/* a transparent huge page */

typedef void setup_fn(const char *kind, const char *dir, struct target *t);

static const struct kind {
	const char *name;
	setup_fn *setup;
	unsigned flags;
} kinds[] = {
	{"anon", setup_anon, K_RACE},
	{"anon-clean", setup_anon, 0},
	{"mlocked", setup_anon, 0},
	{"map-locked", setup_map_locked, 0},
	{"mlockall", setup_anon, 0},
	{"pagecache-clean", setup_pagecache, K_DISK | K_FILE | K_RACE},
	{"pagecache-dirty", setup_pagecache, K_DISK | K_FILE | K_RACE},
	{"file-hole", setup_file_hole, K_DISK | K_FILE},
	{"shmem", setup_shmem, K_FILE | K_RACE},
	{"memfd", setup_memfd, K_FILE | K_RACE},
	{"sysv-shm", setup_sysv_shm, 0},
	{"swap-clean", setup_swap, K_SWAP | K_RACE},
	{"swap-dirty", setup_swap, K_SWAP | K_RACE},
	{"thp-head", setup_thp, K_THP | K_RACE},
	{"thp-tail", setup_thp, K_THP | K_RACE},
	{"hugetlb-anon", setup_hugetlb, K_HUGETLB | K_RACE},
	{"hugetlb-file", setup_hugetlb, K_HUGETLB | K_FILE | K_RACE},
	{"ksm", setup_ksm, K_RACE},
	{"anon-shared-fork", setup_anon_shared_fork, 0},
	{"writeback", setup_pagecache, K_DISK | K_FILE},
	{"free-buddy", setup_free_buddy, K_UNMAPPED | K_UNTOUCHED},
	{"kernel", setup_kernel, K_UNMAPPED | K_UNTOUCHED},
	{"vdso", setup_vdso, K_UNTOUCHED},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct kind *kind_of(const char *name)
{
	for (size_t i = 0; i < N(kinds); i++)
		if (!strcmp(kinds[i].name, name))
			return &kinds[i];
	return NULL;
}

static void setup(const char *kind, const char *dir, struct target *t)
{
	const struct kind *k = kind_of(kind);
	t->fd = -1;
	t->shmid = -1;
	if (!k) {
		errno = EINVAL;
		fail("unknown kind");
	}
	k->setup(kind, dir, t);
	if (t->page)
		t->pfn = pfn_of(t->page);
}

static int sysfs_offline(const char *which, uint64_t pfn)
{
	char path[128];
	snprintf(path, sizeof(path), "/sys/devices/system/memory/%s_offline_page", which);
	return write_num(path, "%#llx\n", pfn * PAGE);
}

static int mce_inject(uint64_t pfn)
{
	const char *d = "/sys/kernel/debug/mce-inject";
	char path[128];
	int r;
#define MCE_FILE(name, fmt, val) \
	(snprintf(path, sizeof(path), "%s/" name, d), write_num(path, fmt, val))
	if ((r = write_str("/sys/kernel/debug/mce-inject/flags", "sw\n")) ||
	    (r = MCE_FILE("status", "%#llx\n", 0xbd000000000000c0ULL)) ||
	    (r = MCE_FILE("misc", "%#llx\n", 0x8cULL)) ||
	    (r = MCE_FILE("addr", "%#llx\n", pfn * PAGE)) ||
	    (r = MCE_FILE("bank", "%llu\n", 9ULL)))
		return r;
	return 0;
#undef MCE_FILE
}

/* ---- injectors: one row each, with the function that poisons the case's page ---- */

#define I_HOST 1	/* injected by the host over QMP, at the page's guest-physical address */
#define I_SYNC 2	/* over when its call returns: a race can use it */

static int timeout_s = 20;	/* --timeout: how long a host injection may take to arrive */

struct injector;
/* Poison t's page (hc_before: HardwareCorrupted before): the errno, 0 on success. A SIGBUS
 * it raises leaves it by siglongjmp. */
typedef int inject_fn(const struct injector *inj, struct target *t, long hc_before);

struct injector {
	const char *name;
	inject_fn *inject;
	unsigned flags;
};

static int inject_madvise(const struct injector *inj, struct target *t, long hc_before)
{
	int advice = strcmp(inj->name, "madvise") ? MADV_SOFT_OFFLINE : MADV_HWPOISON;
	return madvise(t->page, PAGE, advice) ? errno : 0;
}

static int inject_corrupt_pfn(const struct injector *inj, struct target *t, long hc_before)
{
	return -write_num("/sys/kernel/debug/hwpoison/corrupt-pfn", "%#llx\n", t->pfn);
}

static int inject_offline(const struct injector *inj, struct target *t, long hc_before)
{
	return -sysfs_offline(strncmp(inj->name, "hard", 4) ? "soft" : "hard", t->pfn);
}

/* Wait until the kernel counts the poison: a logged record (mce-inject) or an SRAO is
 * handled from a work queue, after its injection returned. */
static void wait_counted(long hc_before, double seconds)
{
	double end = now() + seconds;
	while (hardware_corrupted_kb() == hc_before && now() < end)
		usleep(20000);
}

static int inject_mce(const struct injector *inj, struct target *t, long hc_before)
{
	int r = mce_inject(t->pfn);
	wait_counted(hc_before, 1);
	return -r;
}

/* Ask the host to inject at the page's guest-physical address, from this vCPU. */
static void request_host(const char *mode, struct target *t)
{
	emit("{\"event\":\"inject-request\",\"mode\":\"%s\",\"gpa\":\"%#llx\",\"cpu\":%d}",
	     mode, (unsigned long long)(t->pfn * PAGE), pin_here());
}

static int inject_host_srao(const struct injector *inj, struct target *t, long hc_before)
{
	char line[64] = "";
	request_host("srao", t);
	if (read(chan, line, sizeof(line) - 1) <= 0)
		fail("handshake");
	wait_counted(hc_before, timeout_s);
	return 0;
}

static int inject_host_srar(const struct injector *inj, struct target *t, long hc_before)
{
	double end = now() + timeout_s;
	unsigned long sum = 0;
	request_host("srar", t);
	/* A clean page may be dropped without a signal and read back into a new frame: stop
	 * spinning when the PFN changes. */
	while (now() < end && pfn_of(t->page) == t->pfn)
		for (long i = 0; i < (1L << 20); i++)
			sum += ((volatile unsigned char *)t->page)[i & (PAGE - 1)];
	return pfn_of(t->page) == t->pfn ? ETIMEDOUT : 0;
}

static int inject_host_srar_kernel(const struct injector *inj, struct target *t, long hc_before)
{
	request_host("srar-kernel", t);
	sleep(timeout_s);	/* in the kernel: the host injects while the CPU is at CPL 0 */
	return ETIMEDOUT;
}

static int inject_none(const struct injector *inj, struct target *t, long hc_before)
{
	return 0;
}

static const struct injector injectors[] = {
	{"madvise", inject_madvise, I_SYNC},
	{"madvise-soft", inject_madvise, I_SYNC},
	{"corrupt-pfn", inject_corrupt_pfn, I_SYNC},
	{"hard-offline", inject_offline, I_SYNC},
	{"soft-offline", inject_offline, I_SYNC},
	{"mce-inject", inject_mce, 0},
	{"host-srao", inject_host_srao, I_HOST},
	{"host-srar", inject_host_srar, I_HOST},
	{"host-srar-kernel", inject_host_srar_kernel, I_HOST},
};

/* "none" (a selftest's or a setup-only case) poisons nothing; it is not in the registry. */
static const struct injector no_injector = {"none", inject_none, I_SYNC};

static const struct injector *injector_of(const char *name)
{
	for (size_t i = 0; i < N(injectors); i++)
		if (!strcmp(injectors[i].name, name))
			return &injectors[i];
	return strcmp(name, "none") ? NULL : &no_injector;
}

/* Poison t's page with a synchronous injector (a race's, or a second poisoning): the errno,
 * 0 on success. */
static int poison_once(const char *name, struct target *t)
{
	const struct injector *inj = injector_of(name);
	return inj && inj->flags & I_SYNC ? inj->inject(inj, t, 0) : EINVAL;
}

/* --list: the registry as one JSON object on stdout. */
static void list_registry(void)
{
	printf("{\"kinds\":[");
	for (size_t i = 0; i < N(kinds); i++)
		printf("%s{\"name\":\"%s\",\"disk\":%s,\"swap\":%s,\"unmapped\":%s,"
		       "\"untouched\":%s,\"file\":%s,\"race\":%s,\"hugetlb\":%s,\"thp\":%s}",
		       i ? "," : "", kinds[i].name,
		       kinds[i].flags & K_DISK ? "true" : "false",
		       kinds[i].flags & K_SWAP ? "true" : "false",
		       kinds[i].flags & K_UNMAPPED ? "true" : "false",
		       kinds[i].flags & K_UNTOUCHED ? "true" : "false",
		       kinds[i].flags & K_FILE ? "true" : "false",
		       kinds[i].flags & K_RACE ? "true" : "false",
		       kinds[i].flags & K_HUGETLB ? "true" : "false",
		       kinds[i].flags & K_THP ? "true" : "false");
	printf("],\"injectors\":[");
	for (size_t i = 0; i < N(injectors); i++)
		printf("%s{\"name\":\"%s\",\"host\":%s,\"synchronous\":%s}", i ? "," : "",
		       injectors[i].name, injectors[i].flags & I_HOST ? "true" : "false",
		       injectors[i].flags & I_SYNC ? "true" : "false");
	printf("]}\n");
}

/* ---- access steps: each one way a program meets the page again, with its own observables ---- */

/* What the page should hold now: the pattern of the last write, or zeros (a hole). */
static unsigned cur_seed = 0x5a;
static int cur_zero;

/* One step's observables. Static: they live across siglongjmp out of a touch. */
static struct {
	int sig, code, lsb;
	const char *data;
	int err;	/* errno of the step's system call, 0 on success, -1 when it made none */
	long bytes;	/* bytes of pread/pwrite, LONG_MIN when none */
} so;

static void step_reset(void)
{
	so.sig = so.code = so.lsb = 0;
	so.data = "unchecked";
	so.err = -1;
	so.bytes = -999999;
}

/* Read (or write) the page through a mapping, catching the SIGBUS a poisoned page gives. */
static void touch(unsigned char *page, int write, int zero_check)
{
	memset((void *)&last_sig, 0, sizeof(last_sig));
	if (sigsetjmp(jump, 1) == 0) {
		armed = 1;
		if (write) {
			fill(page, seed + 1);
			armed = 0;
			so.data = "written";
			cur_seed = seed + 1;
			cur_zero = 0;
		} else {
			so.data = check(page, cur_seed, zero_check);
			armed = 0;
		}
	} else {
		so.sig = 1;
		so.code = last_sig.code;
		so.lsb = last_sig.lsb;
		so.data = "unreadable";
	}
}

static void emit_step(const char *name)
{
	char sig[48] = "null", lsb[16] = "null", err[16] = "null", bytes[24] = "null";
	if (so.sig) {
		snprintf(sig, sizeof(sig), "\"%s\"", code_name(so.code));
		snprintf(lsb, sizeof(lsb), "%d", so.lsb);
	}
	if (so.err >= 0)
		snprintf(err, sizeof(err), "%d", so.err);
	if (so.bytes != -999999)
		snprintf(bytes, sizeof(bytes), "%ld", so.bytes);
	emit("{\"event\":\"step\",\"step\":\"%s\",\"signal\":%s,\"si_addr_lsb\":%s,"
	     "\"data\":\"%s\",\"errno\":%s,\"bytes\":%s}", name, sig, lsb, so.data, err, bytes);
}

/* munmap the page's mapping and map the same file (or attach the same segment) again. */
static int remap(struct target *t)
{
	if (t->shmid >= 0) {
		if (shmdt(t->page))
			return errno;
		void *p = shmat(t->shmid, NULL, 0);
		if (p == (void *)-1)
			return errno;
		t->page = p;
		return 0;
	}
	if (munmap(t->map, t->map_len))
		return errno;
	unsigned char *p = mmap(NULL, t->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
	if (p == MAP_FAILED)
		return errno;
	t->map = p;
	t->page = p + t->off;
	return 0;
}

/* A new process meets the page: it opens and maps the file (or attaches the segment), or,
 * for anonymous kinds, touches what it inherited. It reports on a pipe. */
static void child_read(struct target *t)
{
	int fds[2], status;
	char buf[128] = "";
	if (pipe(fds)) {
		so.err = errno;
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		so.err = errno;
		return;
	}
	if (pid == 0) {
		unsigned char *p = t->page;
		close(fds[0]);
		step_reset();
		if (t->fd >= 0) {
			char path[64];
			snprintf(path, sizeof(path), "/proc/self/fd/%d", t->fd);
			int fd = open(path, O_RDONLY);
			p = fd < 0 ? MAP_FAILED : mmap(NULL, t->map_len, PROT_READ, MAP_SHARED, fd, 0);
			p = p == MAP_FAILED ? NULL : p + t->off;
		} else if (t->shmid >= 0) {
			p = shmat(t->shmid, NULL, SHM_RDONLY);
			p = p == (void *)-1 ? NULL : p;
		}
		if (p)
			touch(p, 0, cur_zero);
		snprintf(buf, sizeof(buf), "%d %d %s %d\n", so.sig ? so.code : 0, so.lsb, so.data,
			 p ? 0 : errno);
		if (write(fds[1], buf, strlen(buf)) < 0)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	ssize_t n;
	while ((n = read(fds[0], buf, sizeof(buf) - 1)) < 0 && errno == EINTR)
		;
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	static char data[32];
	int code = 0, lsb = 0, err = 0;
	if (n > 0 && sscanf(buf, "%d %d %31s %d", &code, &lsb, data, &err) == 4) {
		so.sig = code != 0;
		so.code = code;
		so.lsb = lsb;
		so.data = data;
		so.err = err ? err : -1;
	} else {
		so.data = WIFSIGNALED(status) ? "child-killed" : "unchecked";
	}
}

/* The errno of an fsync step: fsync_errno, the error "a later fsync" reports, is then that
 * one (an error is reported once per open file, so a second fsync would say 0). */
static int fsync_step_errno = -1;

static void run_step(const char *step, struct target *t)
{
	static unsigned char buf[PAGE];
	step_reset();
	if (!strcmp(step, "read") || !strcmp(step, "write")) {
		touch(t->page, step[0] == 'w', cur_zero);
	} else if (!strcmp(step, "remap-read") || !strcmp(step, "remap-write")) {
		so.err = remap(t);
		if (!so.err)
			touch(t->page, step[6] == 'w', cur_zero);
	} else if (!strcmp(step, "private-read")) {
		unsigned char *p = mmap(NULL, t->map_len, PROT_READ, MAP_PRIVATE, t->fd, 0);
		so.err = p == MAP_FAILED ? errno : 0;
		if (!so.err) {
			touch(p + t->off, 0, cur_zero);
			munmap(p, t->map_len);
		}
	} else if (!strcmp(step, "pread")) {
		ssize_t n = pread(t->fd, buf, PAGE, t->off);
		so.err = n < 0 ? errno : 0;
		so.bytes = n;
		so.data = n == (ssize_t)PAGE ? check(buf, cur_seed, cur_zero) :
			  n < 0 ? "unreadable" : "short";
	} else if (!strcmp(step, "pwrite")) {
		fill(buf, seed + 2);
		ssize_t n = pwrite(t->fd, buf, PAGE, t->off);
		so.err = n < 0 ? errno : 0;
		so.bytes = n;
		if (n == (ssize_t)PAGE) {
			so.data = "written";
			cur_seed = seed + 2;
			cur_zero = 0;
		}
	} else if (!strcmp(step, "child-read")) {
		child_read(t);
	} else if (!strcmp(step, "populate-read")) {
		memset((void *)&last_sig, 0, sizeof(last_sig));
		if (sigsetjmp(jump, 1) == 0) {
			armed = 1;
			so.err = madvise(t->page, PAGE, MADV_POPULATE_READ) ? errno : 0;
			armed = 0;
		} else {
			so.sig = 1;
			so.code = last_sig.code;
			so.lsb = last_sig.lsb;
		}
	} else if (!strcmp(step, "after-drop-caches")) {
		sync();
		so.err = -write_str("/proc/sys/vm/drop_caches", "3\n");
		touch(t->page, 0, cur_zero);
	} else if (!strcmp(step, "truncate-extend")) {
		so.err = ftruncate(t->fd, t->off) || ftruncate(t->fd, t->map_len) ? errno : 0;
		/* data: "zeroed" when the page now reads as the hole truncation leaves */
		touch(t->page, 0, 0);
		if (!so.err)
			cur_zero = 1;
	} else if (!strcmp(step, "fsync")) {
		so.err = fsync(t->fd) ? errno : 0;
		fsync_step_errno = so.err;
	} else if (strcmp(step, "none")) {
		errno = EINVAL;
		fail("unknown access step");
	}
	emit_step(step);
}

/* ---- race mode: poison a page while another thread does something to it ----
 *
 * --race ACTION --rounds N --seed S: N rounds, each on a page of its own set up afresh. In
 * each, the workload (on the last vCPU) poisons the page with its injector while a racer
 * thread (on vCPU 0) does ACTION to it; a barrier releases both at once and a delay drawn
 * from the seed holds one of them back, so the rounds walk over the orders the two can take.
 * After both, the workload reads the page (and, for ACTION unpoison, unpoisons it if it is
 * still poisoned) and reports the round as raw facts: the host judges them (parse.py).
 *   actions: truncate punch-hole munmap fork pageout compact poison2 unpoison soft-offline */
#define RACE_BITS 22	/* a delay is up to 2^21 spins, log-uniform: short ones as often as long */

static struct race {
	const char *action;
	struct target *t;
	unsigned delay;		/* the racer's, this round */
	int err;		/* errno of the racer's action, 0 on success, -1 when none */
	int unmapped;		/* the racer unmapped the page's mapping */
	char child[32];		/* fork: what the child read of the page */
	int stop;
	int spin_wait;		/* two vCPUs or more: wait by spinning, not by yielding */
	/* Round numbers, one flag each: the racer is ready, it may go, it is done. Spinning on
	 * them, not a futex barrier: a sleeping thread's wake-up takes longer on TCG than the
	 * races themselves, and would decide every round the same way. */
	int ready, go, done;
} race;

static void spin(unsigned n)
{
	for (volatile unsigned i = 0; i < n; i++)
		;
}

static void wait_for(int *flag, int value)
{
	while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) != value)
		if (!race.spin_wait)
			sched_yield();	/* one vCPU: let the other thread run */
}

static void set_flag(int *flag, int value)
{
	__atomic_store_n(flag, value, __ATOMIC_RELEASE);
}

static void pin_to(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);	/* a one-vCPU guest: stays where it is */
}

/* fork: a child reads the page while it is being poisoned, and says what it read. */
static int race_fork(struct target *t, char *out, size_t len)
{
	int fds[2], status;
	if (pipe(fds))
		return errno;
	pid_t pid = fork();
	if (pid < 0)
		return errno;
	if (pid == 0) {
		const char *d = read_page(t->page);
		if (write(fds[1], d, strlen(d)) < 0)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	ssize_t n;
	while ((n = read(fds[0], out, len - 1)) < 0 && errno == EINTR)
		;
	out[n > 0 ? n : 0] = 0;
	if (n <= 0)
		snprintf(out, len, "child-killed");
	close(fds[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return 0;
}

static int race_action(struct race *r)
{
	struct target *t = r->t;
	const char *a = r->action;
	size_t unit = t->map_len >= HUGE && t->fd >= 0 ? HUGE : PAGE;	/* hugetlb-file */
	if (!strcmp(a, "truncate"))	/* to the page's offset, and back to the old size */
		return ftruncate(t->fd, t->off) || ftruncate(t->fd, t->map_len) ? errno : 0;
	if (!strcmp(a, "punch-hole"))
		return fallocate(t->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				 t->off & ~(off_t)(unit - 1), unit) ? errno : 0;
	if (!strcmp(a, "munmap")) {
		int err = munmap(t->map ? t->map : t->page, t->map ? t->map_len : PAGE) ? errno : 0;
		r->unmapped = !err;
		return err;
	}
	if (!strcmp(a, "fork"))
		return race_fork(t, r->child, sizeof(r->child));
	if (!strcmp(a, "pageout"))
		return madvise(t->page, PAGE, MADV_PAGEOUT) ? errno : 0;
	if (!strcmp(a, "compact"))
		return -write_str("/proc/sys/vm/compact_memory", "1\n");
	if (!strcmp(a, "poison2"))
		return poison_once("corrupt-pfn", t);
	if (!strcmp(a, "unpoison"))
		return -write_num("/sys/kernel/debug/hwpoison/unpoison-pfn", "%#llx\n", t->pfn);
	if (!strcmp(a, "soft-offline"))
		return poison_once("soft-offline", t);
	return EINVAL;
}

static void *racer(void *arg)
{
	struct race *r = arg;
	pin_to(0);
	for (int round = 1;; round++) {
		set_flag(&r->ready, round);
		wait_for(&r->go, round);
		if (r->stop)
			return NULL;
		spin(r->delay);
		r->err = race_action(r);
		set_flag(&r->done, round);
	}
}

/* Undo setup() before the next round: unmap what it mapped (unless the racer did), close
 * and empty its file. */
static void teardown(struct target *t, int unmapped)
{
	if (!unmapped && t->page)
		munmap(t->map ? t->map : t->page, t->map ? t->map_len : PAGE);
	if (t->fd >= 0) {
		if (ftruncate(t->fd, 0))
			;	/* memfd and hugetlb files go with their descriptor anyway */
		close(t->fd);
	}
}

static int race_main(const char *kind, const char *injector, const char *action,
		     const char *dir, int rounds, unsigned seed_arg)
{
	static struct target t;
	static unsigned rs;
	static int round, err, sig;
	static unsigned main_delay;
	static long frames = -1;
	int rescan = !strcmp(action, "unpoison") || kind_of(kind)->flags & K_HUGETLB;
	pthread_t th;
	rs = seed_arg;
	race.action = action;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	double t0 = now();
	frames = poisoned_frames();	/* what one scan costs is in the race's event */
	emit("{\"event\":\"race\",\"kind\":\"%s\",\"injector\":\"%s\",\"action\":\"%s\","
	     "\"rounds\":%d,\"seed\":%u,\"cpus\":%ld,\"scan_ms\":%.1f}", kind, injector, action,
	     rounds, seed_arg, ncpu, (now() - t0) * 1e3);
	pin_here();
	race.spin_wait = ncpu > 1;
	if (kind_of(kind)->flags & K_HUGETLB)	/* a poisoned huge page leaves the pool: one a round */
		write_num("/proc/sys/vm/nr_hugepages", "%llu", (unsigned long long)rounds + 2);
	if ((errno = pthread_create(&th, NULL, racer, &race)))
		fail("pthread_create");
	for (round = 0; round < rounds; round++) {
		memset(&t, 0, sizeof(t));
		setup(kind, dir, &t);
		race.t = &t;
		race.unmapped = 0;
		race.err = -1;
		race.child[0] = 0;
		unsigned d = rand_r(&rs) % (1U << (rand_r(&rs) % RACE_BITS));
		int racer_waits = rand_r(&rs) & 1;
		race.delay = racer_waits ? d : 0;
		main_delay = racer_waits ? 0 : d;
		/* The frames poisoned before the round: as the last round left them, unless its
		 * end may have changed them (an unpoison, a huge page dissolved when freed). */
		long hc0 = hardware_corrupted_kb();
		if (rescan && round > 0)
			frames = poisoned_frames();
		long frames0 = frames;
		wait_for(&race.ready, round + 1);
		set_flag(&race.go, round + 1);
		spin(main_delay);
		memset((void *)&last_sig, 0, sizeof(last_sig));
		err = -1;
		sig = 0;
		if (sigsetjmp(jump, 1) == 0) {
			armed = 1;
			err = poison_once(injector, &t);
			armed = 0;
		} else {
			sig = last_sig.code;
		}
		wait_for(&race.done, round + 1);

		/* what a program reads of the page now: through a new mapping if it is gone */
		const char *data = "unchecked";
		if (!race.unmapped) {
			data = read_page(t.page);
		} else if (t.fd >= 0) {
			unsigned char *p = mmap(NULL, t.map_len, PROT_READ, MAP_SHARED, t.fd, 0);
			if (p != MAP_FAILED) {
				data = read_page(p + t.off);
				munmap(p, t.map_len);
			}
		}
		long hc1 = hardware_corrupted_kb(), frames1 = frames = poisoned_frames();
		int poisoned = !!(kpageflags(t.pfn) & (1ULL << KPF_HWPOISON));
		int unpoison_errno = -1;
		if (!strcmp(action, "unpoison") && poisoned)
			unpoison_errno = -write_num("/sys/kernel/debug/hwpoison/unpoison-pfn",
						    "%#llx\n", t.pfn);
		long hc2 = hardware_corrupted_kb();
		int poisoned_after = !!(kpageflags(t.pfn) & (1ULL << KPF_HWPOISON));
		char child[48] = "null";
		if (race.child[0])
			snprintf(child, sizeof(child), "\"%s\"", race.child);
		emit("{\"event\":\"race-round\",\"round\":%d,\"racer_delayed\":%s,\"delay\":%u,"
		     "\"inject_errno\":%d,\"inject_signal\":%s%s%s,\"racer_errno\":%d,"
		     "\"data\":\"%s\",\"child_data\":%s,\"hc_delta\":%ld,\"frames_delta\":%ld,"
		     "\"poisoned\":%s,"
		     "\"unpoison_errno\":%d,\"hc_delta_end\":%ld,\"poisoned_end\":%s}",
		     round, racer_waits ? "true" : "false", d, err, sig ? "\"" : "",
		     sig ? code_name(sig) : "null", sig ? "\"" : "", race.err, data, child,
		     hc1 - hc0, frames1 - frames0, poisoned ? "true" : "false", unpoison_errno, hc2 - hc0,
		     poisoned_after ? "true" : "false");
		teardown(&t, race.unmapped);
	}
	wait_for(&race.ready, round + 1);
	race.stop = 1;
	set_flag(&race.go, round + 1);
	pthread_join(th, NULL);
	emit("{\"event\":\"result\",\"kind\":\"%s\",\"injector\":\"%s\",\"access\":\"race\","
	     "\"race\":\"%s\",\"rounds\":%d}", kind, injector, action, round);
	return 0;
}

int main(int argc, char **argv)
{
	/* static: these live across siglongjmp */
	static const char *kind = "anon", *injector = "madvise", *access_mode = "read";
	static const char *dir = "/mnt", *cleanup = "none";
	static int rounds = 10;
	static const char *race_action_name;
	static unsigned race_seed = 1;
	static struct target t;

	if (argc == 2 && !strcmp(argv[1], "--list")) {
		list_registry();
		return 0;
	}
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--kind")) kind = argv[i + 1];
		else if (!strcmp(argv[i], "--injector")) injector = argv[i + 1];
		else if (!strcmp(argv[i], "--access")) access_mode = argv[i + 1];
		else if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
		else if (!strcmp(argv[i], "--timeout")) timeout_s = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--cleanup")) cleanup = argv[i + 1];
		else if (!strcmp(argv[i], "--race")) race_action_name = argv[i + 1];
		else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seed")) race_seed = strtoul(argv[i + 1], NULL, 10);
		else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
	}
	if (fcntl(chan, F_GETFD) < 0)
		chan = STDOUT_FILENO;
	/* the access steps: the first, when it is read, write or none, is the classic access */
	static char access_list[512];
	static char *steps[MAX_STEPS];
	static int nsteps, first_step;
	snprintf(access_list, sizeof(access_list), "%s", access_mode);
	for (char *save = NULL, *w = strtok_r(access_list, ",", &save); w && nsteps < MAX_STEPS;
	     w = strtok_r(NULL, ",", &save))
		steps[nsteps++] = w;
	if (nsteps && (!strcmp(steps[0], "read") || !strcmp(steps[0], "write") ||
		       !strcmp(steps[0], "none")))
		first_step = 1;
	static const char *classic;
	classic = first_step ? steps[0] : "none";

	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	static const struct injector *inj;
	inj = injector_of(injector);
	errno = EINVAL;
	if (!kind_of(kind))
		fail("unknown kind");
	if (!inj)
		fail("unknown injector");
	if (race_action_name)
		return race_main(kind, injector, race_action_name, dir, rounds, race_seed);
	setup(kind, dir, &t);
	long huge_before = meminfo("HugePages_Total");
	static uintptr_t addr;
	addr = (uintptr_t)t.page;
	static uint64_t pfn_before;
	pfn_before = t.pfn;
	uint64_t flags_before = kpageflags(pfn_before);
	long hc_before = hardware_corrupted_kb();
	emit("{\"event\":\"page\",\"kind\":\"%s\",\"vaddr\":\"%#lx\",\"pfn\":\"%#llx\","
	     "\"gpa\":\"%#llx\",\"kpageflags\":\"%#llx\",\"hardware_corrupted_kb\":%ld}",
	     kind, (unsigned long)addr, (unsigned long long)pfn_before,
	     (unsigned long long)(pfn_before * PAGE), (unsigned long long)flags_before, hc_before);

	/* inject */
	static int inject_rc, inject_errno, inject_sig;
	char sig_inject[256], sig_access[256], sig_early[256];
	memset((void *)&last_sig, 0, sizeof(last_sig));
	if (sigsetjmp(jump, 1) == 0) {
		armed = 1;
		inject_errno = inj->inject(inj, &t, hc_before);
		inject_rc = inject_errno ? -1 : 0;
		armed = 0;
	} else {
		inject_sig = 1;
	}
	sig_json(sig_inject, sizeof(sig_inject), inject_sig, last_sig.code, last_sig.addr,
		 last_sig.lsb, addr);
	static long hc_after_inject;
	hc_after_inject = hardware_corrupted_kb();

	/* access */
	static int access_sig;
	static const char *data = "unchecked";
	memset((void *)&last_sig, 0, sizeof(last_sig));
	if (t.page && sigsetjmp(jump, 1) == 0) {
		armed = 1;
		if (!strcmp(classic, "read"))
			data = check(t.page, seed, t.zero);
		else if (!strcmp(classic, "write")) {
			fill(t.page, seed + 1);
			data = "written";
			cur_seed = seed + 1;
		}
		armed = 0;
	} else if (t.page) {
		access_sig = 1;
		data = "unreadable";
	}
	sig_json(sig_access, sizeof(sig_access), access_sig, last_sig.code, last_sig.addr,
		 last_sig.lsb, addr);
	sig_json(sig_early, sizeof(sig_early), early_sig.signo, early_sig.code, early_sig.addr,
		 early_sig.lsb, addr);

	uint64_t pfn_after = (t.page && !access_sig) ? pfn_of(t.page) : 0;
	cur_zero = t.zero;
	for (int i = first_step; i < nsteps; i++)
		run_step(steps[i], &t);
	int fsync_errno = fsync_step_errno;
	if (t.fd >= 0 && fsync_errno < 0)
		fsync_errno = fsync(t.fd) ? errno : 0;

	char sibling_json[160] = "null";
	if (t.sibling > 0) {
		char buf[128] = "", early[32], late[32], sdata[32];
		int status = 0;
		if (write(t.to_sibling, "x", 1) == 1 && read(t.from_sibling, buf, sizeof(buf) - 1) > 0 &&
		    sscanf(buf, "%31s %31s %31s", early, late, sdata) == 3)
			snprintf(sibling_json, sizeof(sibling_json),
				 "{\"early_signal\":\"%s\",\"access_signal\":\"%s\",\"data\":\"%s\"}",
				 early, late, sdata);
		waitpid(t.sibling, &status, 0);
	}

	if (t.page && kind_of(kind)->flags & (K_HUGETLB | K_THP))
		munmap(t.page, HUGE);	/* a poisoned huge page leaves the pool when freed */
	long huge_after = meminfo("HugePages_Total");
	long hc_after = hardware_corrupted_kb();

	int unpoison_errno = -1;
	long hc_after_unpoison = -1;
	if (!strcmp(cleanup, "unpoison")) {
		int r = write_num("/sys/kernel/debug/hwpoison/unpoison-pfn", "%#llx\n", pfn_before);
		unpoison_errno = -r;
		hc_after_unpoison = hardware_corrupted_kb();
	}

	emit("{\"event\":\"result\",\"kind\":\"%s\",\"injector\":\"%s\",\"access\":\"%s\","
	     "\"inject_rc\":%d,\"inject_errno\":%d,\"inject_signal\":%s,\"access_signal\":%s,"
	     "\"early_signal\":%s,\"sibling\":%s,"
	     "\"data\":\"%s\",\"pfn_before\":\"%#llx\",\"pfn_after\":\"%#llx\","
	     "\"hardware_corrupted_kb_before\":%ld,\"hardware_corrupted_kb_after_inject\":%ld,"
	     "\"hardware_corrupted_kb_after\":%ld,\"huge_pages_before\":%ld,"
	     "\"huge_pages_after\":%ld,\"fsync_errno\":%d,\"unpoison_errno\":%d,"
	     "\"hardware_corrupted_kb_after_unpoison\":%ld}",
	     kind, injector, access_mode, inject_rc, inject_errno, sig_inject, sig_access,
	     sig_early, sibling_json, data, (unsigned long long)pfn_before,
	     (unsigned long long)pfn_after, hc_before, hc_after_inject, hc_after, huge_before,
	     huge_after, fsync_errno, unpoison_errno, hc_after_unpoison);
	return 0;
}
