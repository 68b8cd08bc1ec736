/* LD_PRELOAD shim for the scale-out tests: flock() fails with ENOSYS, as on a filesystem
   without flock (Lustre mounted noflock), so that the engine's fallback to lock files runs
   end to end in real worker processes. */
#include <errno.h>

int flock(int fd, int operation) {
  (void)fd;
  (void)operation;
  errno = ENOSYS;
  return -1;
}
