#define _GNU_SOURCE
#include "CWarrenSupport.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/ioctl.h>

int warren_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

pid_t warren_gettid(void) {
    return (pid_t)syscall(SYS_gettid);
}

int warren_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int warren_pipe_unread(int fd) {
    int bytes = 0;
    if (ioctl(fd, FIONREAD, &bytes) != 0) return -1;
    return bytes;
}

int warren_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int warren_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[],
                 int stdin_fd, int stdout_fd, int stderr_fd) {
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t actions;
    sigset_t all, none;
    int rc;

    if ((rc = posix_spawnattr_init(&attr)) != 0) return rc;
    if ((rc = posix_spawn_file_actions_init(&actions)) != 0) {
        posix_spawnattr_destroy(&attr);
        return rc;
    }
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_USEVFORK);
    posix_spawn_file_actions_adddup2(&actions, stdin_fd, 0);
    posix_spawn_file_actions_adddup2(&actions, stdout_fd, 1);
    posix_spawn_file_actions_adddup2(&actions, stderr_fd, 2);
    /* Nothing else warren holds or inherited (its parent's descriptors, a
     * library's socket opened without O_CLOEXEC) reaches a handler. */
    if ((rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3)) != 0) {
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
        return rc;
    }

    if (path[0] == '/' || path[0] == '.') {
        rc = posix_spawn(pid, path, &actions, &attr, argv, envp);
    } else {
        rc = posix_spawnp(pid, path, &actions, &attr, argv, envp);
    }
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    return rc;
}

/* Finds `name` on the parent's PATH, as posix_spawnp would; done before
 * the fork, since the child may only make async-signal-safe calls. */
static int resolve_program(const char *name, char *out, size_t size) {
    if (strchr(name, '/') != NULL) {
        if (strlen(name) >= size) return ENAMETOOLONG;
        strcpy(out, name);
        return 0;
    }
    const char *path = getenv("PATH");
    if (path == NULL || *path == 0) path = "/usr/local/bin:/usr/bin:/bin";
    int found_error = ENOENT;
    while (*path) {
        const char *end = strchr(path, ':');
        size_t length = end ? (size_t)(end - path) : strlen(path);
        if (length == 0) {
            if (strlen(name) + 1 < size) { strcpy(out, name); }
        } else if (length + 1 + strlen(name) < size) {
            memcpy(out, path, length);
            out[length] = '/';
            strcpy(out + length + 1, name);
        } else {
            out[0] = 0;
        }
        if (out[0] != 0) {
            if (access(out, X_OK) == 0) return 0;
            if (errno == EACCES) found_error = EACCES;
        }
        if (!end) break;
        path = end + 1;
    }
    return found_error;
}

/* Marks every descriptor from 3 up close-on-exec, in a forked child
 * (async-signal-safe calls only). close_range(2) with CLOSE_RANGE_CLOEXEC
 * needs Linux 5.11; before it, each possible descriptor is marked. */
static void close_inherited_descriptors(void) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
#endif
    struct rlimit limit;
    long highest = (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) ? (long)limit.rlim_cur : 65536;
    if (highest > 1048576) highest = 1048576;
    for (long fd = 3; fd < highest; fd++) fcntl((int)fd, F_SETFD, FD_CLOEXEC);
}

int warren_spawn_worker(pid_t *pid, const char *program, char *const argv[], char *const envp[],
                        int stdin_fd, int stdout_fd, int stderr_fd) {
    char path[4096];
    int rc = resolve_program(program, path, sizeof(path));
    if (rc != 0) return rc;
    /* The child reports a failed exec through this pipe; a successful exec
     * closes it (O_CLOEXEC), so the parent reads end of file. */
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return errno;
    sigset_t all, old;
    sigfillset(&all);
    /* No signal handler of the parent may run in the child. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
        close(report[0]);
        setpgid(0, 0);
        /* Killed with the thread that spawned it: a worker never outlives warren, even a SIGKILLed one. */
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (getppid() != parent) _exit(127);  /* warren died before the prctl */
        for (int signal = 1; signal < NSIG; signal++) {
            if (signal == SIGKILL || signal == SIGSTOP) continue;
            struct sigaction action;
            memset(&action, 0, sizeof(action));
            action.sa_handler = SIG_DFL;
            sigaction(signal, &action, NULL);
        }
        /* A pipe end may itself be 0, 1 or 2 (warren started with one of
         * them closed): moved above 2 first, so no dup2 overwrites another
         * end, and so each dup2 below makes a new descriptor, which never
         * carries O_CLOEXEC (dup2(fd, fd) would keep it). */
        int ends[3] = {stdin_fd, stdout_fd, stderr_fd};
        for (int target = 0; target < 3; target++) {
            if (ends[target] < 3) ends[target] = fcntl(ends[target], F_DUPFD_CLOEXEC, 3);
            if (ends[target] < 0) {
                int error = errno;
                (void)!write(report[1], &error, sizeof(error));
                _exit(127);
            }
        }
        for (int target = 0; target < 3; target++) {
            if (dup2(ends[target], target) < 0) {
                int error = errno;
                (void)!write(report[1], &error, sizeof(error));
                _exit(127);
            }
        }
        /* Nothing else warren holds or inherited reaches the worker. */
        close_inherited_descriptors();
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(path, argv, envp);
        int error = errno;
        (void)!write(report[1], &error, sizeof(error));
        _exit(127);
    }
    int fork_error = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(report[1]);
    if (child < 0) {
        close(report[0]);
        return fork_error;
    }
    /* Also from the parent, so the group exists before anyone signals it. */
    setpgid(child, child);
    int error = 0;
    ssize_t got;
    do { got = read(report[0], &error, sizeof(error)); } while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof(error)) {
        int status;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
        return error;
    }
    *pid = child;
    return 0;
}

void warren_set_thread_name(const char *name) {
    pthread_setname_np(pthread_self(), name);
}

int warren_become_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

int warren_sd_notify(const char *path, const char *message) {
    struct sockaddr_un address;
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof(address.sun_path)) {
        errno = EINVAL;
        return -1;
    }
    memset(&address, 0, sizeof(address));
    address.sun_family = AF_UNIX;
    memcpy(address.sun_path, path, length);
    if (path[0] == '@') address.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    socklen_t size = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length);
    ssize_t sent = sendto(fd, message, strlen(message), MSG_NOSIGNAL, (struct sockaddr *)&address, size);
    int saved = errno;
    close(fd);
    errno = saved;
    return sent < 0 ? -1 : 0;
}

int warren_wake_pipe(int fds[2]) {
    return pipe2(fds, O_CLOEXEC | O_NONBLOCK);
}
