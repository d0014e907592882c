/* The worker process and its channel (POSIX: Linux and macOS).
 *
 * The worker is a vosfx Python process, never code inside the host: hosts ship their own
 * libraries (LD_LIBRARY_PATH, PYTHONPATH, their own Python) and security software blocks ML
 * runtimes inside host processes. It gets two descriptors and nothing else: fd 3, a Unix socket
 * pair end, and fd 4, a shared-memory file (memfd on Linux, an unlinked shm object elsewhere).
 * Its environment is the host's minus the variables that would make it load the host's
 * libraries. Writes use MSG_NOSIGNAL / SO_NOSIGPIPE, so a dead worker never raises SIGPIPE in
 * the host; reads time out, so a hung worker never hangs the host for ever.
 */
#define _GNU_SOURCE
#include "vosfx_ofx.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#ifndef SOCK_CLOEXEC
#define SOCK_CLOEXEC 0 /* macOS: vx_high_cloexec sets close-on-exec right after */
#endif

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* macOS: SO_NOSIGPIPE is set on the socket instead */
#endif

#define VX_FD_CHILD_SOCK 3
#define VX_FD_CHILD_SHM 4

/* Contents/Resources/vosfx_worker.cfg beside the binary (Contents/<arch>/vosfx.ofx), or
 * $VOSFX_OFX_CONFIG. Lines: "vosfx ARG", "worker ARG", "env NAME=VALUE", "# comment". */
int vx_config_path(char *out, size_t cap) {
    const char *env = getenv("VOSFX_OFX_CONFIG");
    if (env && env[0]) {
        snprintf(out, cap, "%s", env);
        return 0;
    }
    Dl_info info;
    if (!dladdr((void *)&vx_config_path, &info) || !info.dli_fname) return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s", info.dli_fname);
    for (int i = 0; i < 2; i++) { /* strip "<arch>/vosfx.ofx" */
        char *slash = strrchr(path, '/');
        if (!slash) return -1;
        *slash = '\0';
    }
    snprintf(out, cap, "%s/Resources/vosfx_worker.cfg", path);
    return 0;
}

FILE *vx_fopen(const char *path, const char *mode) { return fopen(path, mode); }

void vx_lock_take(VxLock *lock) { pthread_mutex_lock(lock); }

void vx_lock_give(VxLock *lock) { pthread_mutex_unlock(lock); }

void vxw_init(VxWorker *w) {
    memset(w, 0, sizeof *w);
    w->sock = w->shm_fd = -1;
}

/* the host's environment minus what would make the worker load the host's libraries,
 * plus the config's env lines; returns a malloc'd array of borrowed strings */
static char **vx_child_env(const VxConfig *cfg) {
    static const char *const drop[] = {"LD_LIBRARY_PATH=", "LD_PRELOAD=", "DYLD_LIBRARY_PATH=",
                                       "DYLD_INSERT_LIBRARIES=", "PYTHONPATH=", "PYTHONHOME=",
                                       "PYTHONSTARTUP=", NULL};
    size_t n = 0;
    while (environ && environ[n]) n++;
    char **env = calloc(n + VX_MAX_ENV + 1, sizeof *env);
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int skip = 0;
        for (int d = 0; drop[d]; d++)
            if (strncmp(environ[i], drop[d], strlen(drop[d])) == 0) skip = 1;
        for (int e = 0; cfg->env[e]; e++) { /* the config's NAME=VALUE wins over the host's */
            size_t name = (size_t)(strchr(cfg->env[e], '=') - cfg->env[e]) + 1;
            if (strncmp(environ[i], cfg->env[e], name) == 0) skip = 1;
        }
        if (!skip) env[k++] = environ[i];
    }
    for (int e = 0; cfg->env[e]; e++) env[k++] = (char *)cfg->env[e];
    env[k] = NULL;
    return env;
}

/* ---- start / stop ------------------------------------------------------------------------ */

static int vx_high_cloexec(int fd) {
    /* above the child's fixed numbers, close-on-exec in the host */
    int hi = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    return hi;
}

static int vx_shm_create(void) {
#ifdef __linux__
    int fd = memfd_create("vosfx-ofx", MFD_CLOEXEC);
    if (fd >= 0) return vx_high_cloexec(fd);
#endif
    char name[64];
    for (int tries = 0; tries < 16; tries++) {
        snprintf(name, sizeof name, "/vosfx-ofx-%ld-%lx", (long)getpid(),
                 (unsigned long)random());
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0) {
            shm_unlink(name); /* no name left: only the two processes hold it */
            return vx_high_cloexec(fd);
        }
    }
    return -1;
}

static int vx_open_log(VxWorker *w) {
    const char *tmp = getenv("TMPDIR");
    snprintf(w->log_path, sizeof w->log_path, "%s/vosfx-ofx-XXXXXX.log",
             (tmp && tmp[0]) ? tmp : "/tmp");
    int fd = mkstemps(w->log_path, 4);
    if (fd < 0) {
        snprintf(w->log_path, sizeof w->log_path, "/dev/null");
        fd = open("/dev/null", O_WRONLY);
    }
    return fd < 0 ? -1 : vx_high_cloexec(fd);
}

static void vx_remove_log(VxWorker *w) {
    if (strcmp(w->log_path, "/dev/null") != 0) unlink(w->log_path);
    w->log_path[0] = '\0';
}

/* The child gets the descriptors the file actions name and no other: a host's files, pipes
 * and sockets that are not close-on-exec must not stay open in the worker (a socket held open
 * there keeps a connection alive; a pipe's reader never sees its end). fds >= lowest are
 * closed after the dup2s: glibc >= 2.34 (and FreeBSD) close the range in the child
 * (addclosefrom_np, looked up at run time, so a bundle built elsewhere still loads); macOS
 * closes everything not named (POSIX_SPAWN_CLOEXEC_DEFAULT, in vx_spawn_attr); elsewhere the
 * descriptors open now are listed and closed one by one (one opened by another thread between
 * the listing and the spawn would slip through: no such libc is known to host OFX). */
static void vx_close_others(posix_spawn_file_actions_t *fa, int lowest) {
#ifdef __APPLE__
    (void)fa, (void)lowest; /* POSIX_SPAWN_CLOEXEC_DEFAULT */
#else
    typedef int (*VxCloseFrom)(posix_spawn_file_actions_t *, int);
    VxCloseFrom closefrom_np =
        (VxCloseFrom)dlsym(RTLD_DEFAULT, "posix_spawn_file_actions_addclosefrom_np");
    if (closefrom_np && closefrom_np(fa, lowest) == 0) return;
    DIR *d = opendir("/proc/self/fd");
    if (!d) d = opendir("/dev/fd");
    if (!d) {
        long most = sysconf(_SC_OPEN_MAX);
        if (most < 0 || most > 65536) most = 65536;
        for (int fd = lowest; fd < most; fd++) posix_spawn_file_actions_addclose(fa, fd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || fd < lowest || fd == dirfd(d)) continue;
        posix_spawn_file_actions_addclose(fa, (int)fd);
    }
    closedir(d);
#endif
}

static void vx_spawn_attr(posix_spawnattr_t *attr) {
    posix_spawnattr_init(attr);
#ifdef __APPLE__
    posix_spawnattr_setflags(attr, POSIX_SPAWN_CLOEXEC_DEFAULT);
#endif
}

int vxw_start(VxWorker *w, char *err, size_t errlen) {
    VxConfig cfg;
    if (vx_config(&cfg, err, errlen) != 0) return -1;
    const char *argv[2 * VX_MAX_ARGS + 8];
    int n = vx_worker_argv(&cfg, argv);
    argv[n++] = "--fd";
    argv[n++] = "3";
    argv[n++] = "--shm-fd";
    argv[n++] = "4";
    argv[n] = NULL;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(err, errlen, "socketpair: %s", strerror(errno));
        return -1;
    }
    sv[0] = vx_high_cloexec(sv[0]);
    sv[1] = vx_high_cloexec(sv[1]);
#ifdef SO_NOSIGPIPE
    int one = 1;
    setsockopt(sv[0], SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    w->shm_fd = vx_shm_create();
    int logfd = vx_open_log(w);
    if (w->shm_fd < 0 || logfd < 0 || sv[0] < 0 || sv[1] < 0) {
        snprintf(err, errlen, "cannot create the worker's channel: %s", strerror(errno));
        close(sv[0]), close(sv[1]);
        if (w->shm_fd >= 0) close(w->shm_fd);
        if (logfd >= 0) close(logfd), vx_remove_log(w);
        w->shm_fd = -1;
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, logfd, 1);
    posix_spawn_file_actions_adddup2(&fa, logfd, 2);
    posix_spawn_file_actions_adddup2(&fa, sv[1], VX_FD_CHILD_SOCK);
    posix_spawn_file_actions_adddup2(&fa, w->shm_fd, VX_FD_CHILD_SHM);
    vx_close_others(&fa, VX_FD_CHILD_SHM + 1);
    posix_spawnattr_t attr;
    vx_spawn_attr(&attr);
    char **env = vx_child_env(&cfg);
    pid_t pid = 0;
    /* posix_spawnp: a bare "vosfx" in the config is looked up on PATH */
    int rc = env ? posix_spawnp(&pid, argv[0], &fa, &attr, (char *const *)argv, env) : ENOMEM;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    free(env);
    close(sv[1]);
    close(logfd);
    if (rc != 0) {
        char shown[512];
        vx_printable(shown, sizeof shown, argv[0], strlen(argv[0]));
        snprintf(err, errlen, "cannot start the vosfx worker '%s': %s", shown, strerror(rc));
        vx_remove_log(w); /* nothing ran: nothing to read */
        close(sv[0]);
        close(w->shm_fd);
        w->shm_fd = -1;
        return -1;
    }
    w->pid = pid;
    w->running = 1;
    w->sock = sv[0];
    w->shm = NULL;
    w->shm_size = 0;
    return 0;
}

int vxw_reserve(VxWorker *w, size_t nbytes, char *err, size_t errlen) {
    if (w->shm_size >= nbytes) return 0;
    size_t size = (nbytes + 0xFFFFF) & ~(size_t)0xFFFFF; /* whole MiB */
    if (ftruncate(w->shm_fd, (off_t)size) != 0) {
        snprintf(err, errlen, "shared memory of %zu bytes: %s", size, strerror(errno));
        return -1;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, w->shm_fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "mmap of %zu bytes: %s", size, strerror(errno));
        return -1;
    }
    if (w->shm) munmap(w->shm, w->shm_size);
    w->shm = p;
    w->shm_size = size;
    return 0;
}

int vxw_write(VxWorker *w, const void *buf, size_t n) {
    if (w->pid <= 0) return -1;
    const char *p = buf;
    while (n > 0) {
        ssize_t k = send(w->sock, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int vxw_read(VxWorker *w, void *buf, size_t n, int timeout_ms, char *err, size_t errlen) {
    if (w->pid <= 0) {
        snprintf(err, errlen, "the vosfx worker is not running");
        return -1;
    }
    char *p = buf;
    while (n > 0) {
        struct pollfd pfd = {w->sock, POLLIN, 0};
        int r = poll(&pfd, 1, timeout_ms);
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) {
            snprintf(err, errlen, "the vosfx worker did not answer for %d s", timeout_ms / 1000);
            return -1;
        }
        ssize_t k = recv(w->sock, p, n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            snprintf(err, errlen, "the vosfx worker closed its channel");
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int vx_wait_exit(pid_t pid, int ms, int *status) {
    for (int waited = 0; waited <= ms; waited += 10) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return 1;
        if (r < 0) return errno == ECHILD ? 2 : -1; /* reaped elsewhere (a host SIGCHLD) */
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

int vxw_stop(VxWorker *w, char *how, size_t howlen) {
    int exit_status = -1;
    if (how && howlen) how[0] = '\0';
    if (w->pid > 0) {
        int status = 0;
        vxw_send(w, VX_QUIT, 0, 0, 0, 0, 0, 0, 0, NULL);
        shutdown(w->sock, SHUT_RDWR);
        int r = vx_wait_exit(w->pid, 3000, &status);
        if (r == 0) {
            kill(w->pid, SIGTERM);
            r = vx_wait_exit(w->pid, 2000, &status);
        }
        if (r == 0) {
            kill(w->pid, SIGKILL);
            r = vx_wait_exit(w->pid, 2000, &status);
        }
        if (r == 1 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && !getenv("VOSFX_OFX_KEEP_LOG"))
            unlink(w->log_path); /* a clean exit: nothing to read */
        if (r == 1 && WIFEXITED(status)) exit_status = WEXITSTATUS(status);
        if (how && howlen) {
            if (r == 1 && WIFEXITED(status))
                snprintf(how, howlen, "exited with status %d", WEXITSTATUS(status));
            else if (r == 1 && WIFSIGNALED(status))
                snprintf(how, howlen, "was killed by signal %d", WTERMSIG(status));
            else
                snprintf(how, howlen, "ended");
        }
        w->pid = 0;
        w->running = 0;
    }
    if (w->sock >= 0) close(w->sock);
    if (w->shm) munmap(w->shm, w->shm_size);
    if (w->shm_fd >= 0) close(w->shm_fd);
    w->sock = w->shm_fd = -1;
    w->shm = NULL;
    w->shm_size = 0;
    return exit_status;
}

/* ---- the studio: a detached process the host does not wait for ------------------------------ */

/* Its pid is kept until it has ended and is reaped: at every action of the effect
 * (vx_reap_detached), so a studio that was closed is not left a zombie for long, however
 * many were opened. */
static pthread_mutex_t vx_studio_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t *vx_studio_pids;
static int vx_studio_count, vx_studio_cap;

void vx_reap_detached(void) {
    pthread_mutex_lock(&vx_studio_lock);
    int k = 0;
    for (int i = 0; i < vx_studio_count; i++) {
        pid_t r = waitpid(vx_studio_pids[i], NULL, WNOHANG);
        if (r == 0 || (r < 0 && errno == EINTR)) vx_studio_pids[k++] = vx_studio_pids[i];
        /* else ended and reaped, or reaped by the host (ECHILD) */
    }
    vx_studio_count = k;
    pthread_mutex_unlock(&vx_studio_lock);
}

void vx_forget_detached(void) {
    pthread_mutex_lock(&vx_studio_lock);
    free(vx_studio_pids);
    vx_studio_pids = NULL;
    vx_studio_count = vx_studio_cap = 0;
    pthread_mutex_unlock(&vx_studio_lock);
}

int vx_spawn_detached(const char *const *argv, char *err, size_t errlen) {
    VxConfig cfg;
    if (vx_config(&cfg, err, errlen) != 0) return -1;
    vx_reap_detached();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
#ifdef __APPLE__
    posix_spawn_file_actions_addinherit_np(&fa, 1); /* the host's stdout and stderr */
    posix_spawn_file_actions_addinherit_np(&fa, 2);
#endif
    vx_close_others(&fa, 3);
    posix_spawnattr_t attr;
    vx_spawn_attr(&attr);
    char **env = vx_child_env(&cfg);
    pid_t pid = 0;
    int rc = env ? posix_spawnp(&pid, argv[0], &fa, &attr, (char *const *)argv, env) : ENOMEM;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    free(env);
    if (rc != 0) {
        char shown[512];
        vx_printable(shown, sizeof shown, argv[0], strlen(argv[0]));
        snprintf(err, errlen, "cannot start '%s': %s", shown, strerror(rc));
        return -1;
    }
    pthread_mutex_lock(&vx_studio_lock);
    if (vx_studio_count == vx_studio_cap) {
        int cap = vx_studio_cap ? 2 * vx_studio_cap : 8;
        pid_t *pids = realloc(vx_studio_pids, (size_t)cap * sizeof *pids);
        if (pids) vx_studio_pids = pids, vx_studio_cap = cap;
    }
    if (vx_studio_count < vx_studio_cap) vx_studio_pids[vx_studio_count++] = pid;
    pthread_mutex_unlock(&vx_studio_lock);
    return 0;
}
