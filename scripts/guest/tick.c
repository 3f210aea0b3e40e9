/* vpool-tick [period_ms]: print "TICK <n> <uptime>" on the console every
 * period_ms (default 1000), on absolute CLOCK_MONOTONIC deadlines. A guest
 * that stood still prints the ticks it owes at once when it runs again, so
 * the host sees one long interval and then a burst: the longest interval
 * between two consecutive ticks, less the period, is how long the guest
 * stood still (internal/hypervisor/qemu/migrate_gap.go). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
	long ms = argc > 1 ? atol(argv[1]) : 1000;
	struct timespec next, up;
	if (ms <= 0)
		ms = 1000;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (unsigned long n = 1;; n++) {
		next.tv_nsec += (ms % 1000) * 1000000L;
		next.tv_sec += ms / 1000 + next.tv_nsec / 1000000000L;
		next.tv_nsec %= 1000000000L;
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) != 0)
			;
		clock_gettime(CLOCK_BOOTTIME, &up);
		printf("TICK %lu %ld.%03ld\n", n, (long)up.tv_sec, up.tv_nsec / 1000000L);
		fflush(stdout);
	}
}
