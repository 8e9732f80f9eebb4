#ifndef WARREN_SUPPORT_H
#define WARREN_SUPPORT_H

#include <sys/types.h>

/* Linux system calls that Swift's Glibc module does not export (or exports
 * only as variadic functions). Each is a thin pass-through. */

/* pidfd_open(2): a descriptor that becomes readable when the process exits,
 * so the process supervisor can wait for many children in one poll(2). */
int warren_pidfd_open(pid_t pid);

/* gettid(2): the calling thread's id, to tell which thread's children
 * (in /proc/self/task/TID/children) are handlers rather than leftovers. */
pid_t warren_gettid(void);

/* pipe2(2) with O_CLOEXEC, so one handler never inherits another's pipes. */
int warren_pipe_cloexec(int fds[2]);

/* A self-pipe for waking a thread out of poll(2): close-on-exec, both ends
 * non-blocking. */
int warren_wake_pipe(int fds[2]);

/* Bytes written to a pipe and not yet read (FIONREAD on either end); -1 on error. */
int warren_pipe_unread(int fd);

/* Set O_NONBLOCK on a descriptor. */
int warren_set_nonblocking(int fd);

/* posix_spawn with: a new process group, every signal's disposition reset to
 * default (warren itself ignores SIGTERM/SIGINT to receive them through
 * dispatch sources, and ignored dispositions survive exec), an empty signal
 * mask, and stdin/stdout/stderr from the given descriptors. */
int warren_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                 int stdin_fd, int stdout_fd, int stderr_fd);

/* For a persistent worker: like warren_spawn (new process group, signals
 * reset, the three descriptors), plus PR_SET_PDEATHSIG = SIGKILL, so the
 * worker dies with the thread that spawned it, even when warren is
 * SIGKILLed. fork + execve (posix_spawn cannot set it); the program is
 * looked up on warren's PATH first. Returns 0 or an errno value. */
int warren_spawn_worker(pid_t *pid, const char *program, char *const argv[], char *const envp[],
                        int stdin_fd, int stdout_fd, int stderr_fd);

/* Names the calling thread (shows in top -H, gdb). */
void warren_set_thread_name(const char *name);

/* prctl(PR_SET_CHILD_SUBREAPER): orphans of handlers are reparented to
 * warren, which reaps them, instead of lingering as zombies. */
int warren_become_subreaper(void);

/* Sends one datagram to the systemd notify socket at `path` (a file path,
 * or an abstract name starting with '@'). Returns 0, or -1 with errno. */
int warren_sd_notify(const char *path, const char *message);

#endif
