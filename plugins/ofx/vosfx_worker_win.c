/* The worker process and its channel (Windows), the twin of vosfx_worker.c.
 *
 * The worker is a vosfx Python process, never code inside the host. It is started with an
 * explicit list of the handles it inherits (its log as stdout and stderr, NUL as stdin: none
 * of the host's), without a console window, in a job object that ends it when the host ends,
 * and in a folder of its own under %TEMP% (its current directory) that holds two files:
 *
 *   frames.shm   the shared memory: a file both processes map (the effect grows it);
 *   worker.log   the worker's stdout and stderr.
 *
 * The channel is a TCP connection on 127.0.0.1: the effect listens on a port the system picks,
 * the worker connects and first sends a 64-hex-digit token it was given in its environment
 * (VOSFX_OFX_TOKEN); a connection without it is closed and the effect keeps waiting. The
 * messages that follow are vosfx_ofx_proto.h's, as on POSIX. Reads time out, so a hung worker
 * never hangs the host for ever.
 *
 * The worker's arguments name the port and the shared file relative to its folder
 * (`--connect PORT --shm-file frames.shm`), so the effect run under Wine can start a Linux
 * vosfx as well as a Windows one (Wine starts a Unix program in the folder's Unix twin, and
 * then gives no process handle: the effect tells the worker's end by its channel alone).
 */
#define WIN32_LEAN_AND_MEAN
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <bcrypt.h>

#include "vosfx_ofx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include <wctype.h>

#define VX_SHM_NAME "frames.shm"
#define VX_LOG_NAME "worker.log"
#define VX_TOKEN_BYTES 32
#define VX_NO_SOCKET ((uintptr_t)INVALID_SOCKET)

/* ---- text: UTF-8 in the effect, UTF-16 for Windows ------------------------------------------- */

/* a malloc'd UTF-16 copy of UTF-8 text; NULL when it is not UTF-8 or memory ran out */
static wchar_t *vx_wide(const char *s) {
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0) return NULL;
    wchar_t *w = malloc((size_t)n * sizeof *w);
    if (w && MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) != n) {
        free(w);
        w = NULL;
    }
    return w;
}

/* UTF-16 text as UTF-8 in out (cap bytes); -1 when it does not fit */
static int vx_narrow(const wchar_t *w, char *out, size_t cap) {
    int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, out, (int)cap, NULL, NULL);
    if (n <= 0) {
        if (cap) out[0] = '\0';
        return -1;
    }
    return 0;
}

/* the system's words for a Windows error code, on one line */
static void vx_win_error(DWORD code, char *out, size_t cap) {
    wchar_t buf[512];
    DWORD n = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL,
                             code, 0, buf, sizeof buf / sizeof buf[0], NULL);
    while (n > 0 && (buf[n - 1] == L'\n' || buf[n - 1] == L'\r' || buf[n - 1] == L'.' ||
                     buf[n - 1] == L' '))
        buf[--n] = L'\0';
    char text[1024];
    if (n == 0 || vx_narrow(buf, text, sizeof text) != 0)
        snprintf(text, sizeof text, "Windows error %lu", (unsigned long)code);
    vx_printable(out, cap, text, strlen(text));
}

/* ---- the platform parts of vosfx_config.c -------------------------------------------------- */

void vx_lock_take(VxLock *lock) { AcquireSRWLockExclusive((PSRWLOCK)&lock->srw); }

void vx_lock_give(VxLock *lock) { ReleaseSRWLockExclusive((PSRWLOCK)&lock->srw); }

FILE *vx_fopen(const char *path, const char *mode) {
    wchar_t *wpath = vx_wide(path), *wmode = vx_wide(mode);
    FILE *f = wpath && wmode ? _wfopen(wpath, wmode) : NULL;
    free(wpath);
    free(wmode);
    return f;
}

/* Contents\Resources\vosfx_worker.cfg beside the binary (Contents\Win64\vosfx.ofx), or
 * %VOSFX_OFX_CONFIG% */
int vx_config_path(char *out, size_t cap) {
    const wchar_t *env = _wgetenv(L"VOSFX_OFX_CONFIG");
    if (env && env[0]) return vx_narrow(env, out, cap);
    HMODULE self = NULL;
    if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS |
                                GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            (LPCWSTR)(void *)&vx_config_path, &self))
        return -1;
    wchar_t wpath[4096];
    DWORD n = GetModuleFileNameW(self, wpath, sizeof wpath / sizeof wpath[0]);
    if (n == 0 || n >= sizeof wpath / sizeof wpath[0]) return -1;
    char path[4 * 4096];
    if (vx_narrow(wpath, path, sizeof path) != 0) return -1;
    for (int i = 0; i < 2; i++) { /* strip "Win64\vosfx.ofx" */
        char *slash = strrchr(path, '\\');
        char *fwd = strrchr(path, '/');
        if (fwd > slash) slash = fwd;
        if (!slash) return -1;
        *slash = '\0';
    }
    int k = snprintf(out, cap, "%s\\Resources\\vosfx_worker.cfg", path);
    return k < 0 || (size_t)k >= cap ? -1 : 0;
}

/* ---- starting a process: its command line and environment ----------------------------------- */

typedef struct VxWBuf {
    wchar_t *s;
    size_t len, cap;
} VxWBuf;

static int vx_wput(VxWBuf *b, const wchar_t *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        wchar_t *p = realloc(b->s, cap * sizeof *p);
        if (!p) return -1;
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->len, s, n * sizeof *s);
    b->len += n;
    b->s[b->len] = L'\0';
    return 0;
}

static int vx_wputc(VxWBuf *b, wchar_t c, size_t times) {
    for (size_t i = 0; i < times; i++)
        if (vx_wput(b, &c, 1) != 0) return -1;
    return 0;
}

/* one argument as the C runtime's parser (CommandLineToArgvW) reads it back unchanged:
 * quoted when it has blanks or quotes or is empty, backslashes doubled before a quote */
static int vx_quote(VxWBuf *b, const wchar_t *arg) {
    if (arg[0] && !wcspbrk(arg, L" \t\n\v\""))
        return vx_wput(b, arg, wcslen(arg));
    if (vx_wputc(b, L'"', 1) != 0) return -1;
    for (const wchar_t *p = arg;; p++) {
        size_t slashes = 0;
        while (*p == L'\\') p++, slashes++;
        if (*p == L'\0') {
            if (vx_wputc(b, L'\\', slashes * 2) != 0) return -1;
            break;
        }
        if (*p == L'"') {
            if (vx_wputc(b, L'\\', slashes * 2 + 1) != 0 || vx_wputc(b, L'"', 1) != 0) return -1;
        } else if (vx_wputc(b, L'\\', slashes) != 0 || vx_wputc(b, *p, 1) != 0) {
            return -1;
        }
    }
    return vx_wputc(b, L'"', 1);
}

/* A bare program name ("vosfx") looked up on PATH only, with ".exe" added where it has no
 * extension: CreateProcess's own search tries the host's current folder first. */
static wchar_t *vx_find_program(const wchar_t *name) {
    if (wcspbrk(name, L"\\/:")) return _wcsdup(name);
    const wchar_t *dot = wcsrchr(name, L'.');
    const wchar_t *ext = dot ? L"" : L".exe";
    const wchar_t *path = _wgetenv(L"PATH");
    for (const wchar_t *p = path; p && *p;) {
        const wchar_t *end = wcschr(p, L';');
        size_t n = end ? (size_t)(end - p) : wcslen(p);
        if (n > 0 && n < 32000) {
            size_t total = n + 1 + wcslen(name) + wcslen(ext) + 1;
            wchar_t *full = malloc(total * sizeof *full);
            if (!full) return NULL;
            _snwprintf(full, total, L"%.*ls\\%ls%ls", (int)n, p, name, ext);
            full[total - 1] = L'\0';
            DWORD attrs = GetFileAttributesW(full);
            if (attrs != INVALID_FILE_ATTRIBUTES && !(attrs & FILE_ATTRIBUTE_DIRECTORY))
                return full;
            free(full);
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

/* The command line of argv (UTF-8), and its program's full path in *program; NULL with err
 * ("cannot start <what>'<program>': ...") */
static wchar_t *vx_command_line(const char *const *argv, const char *what, wchar_t **program,
                                char *err, size_t errlen) {
    char shown[512];
    vx_printable(shown, sizeof shown, argv[0], strlen(argv[0]));
    VxWBuf b = {0};
    *program = NULL;
    for (int i = 0; argv[i]; i++) {
        wchar_t *arg = vx_wide(argv[i]);
        if (!arg) {
            snprintf(err, errlen, "cannot start %s'%s': an argument is not UTF-8", what, shown);
            free(b.s);
            return NULL;
        }
        if (i == 0) {
            *program = vx_find_program(arg);
            if (!*program) {
                snprintf(err, errlen, "cannot start %s'%s': not found on PATH", what, shown);
                free(arg);
                free(b.s);
                return NULL;
            }
        }
        int rc = (i ? vx_wputc(&b, L' ', 1) : 0) || vx_quote(&b, arg);
        free(arg);
        if (rc != 0) {
            snprintf(err, errlen, "out of memory");
            free(b.s);
            free(*program);
            *program = NULL;
            return NULL;
        }
    }
    return b.s;
}

static int vx_env_name_cmp(const void *a, const void *b) {
    const wchar_t *x = *(const wchar_t *const *)a, *y = *(const wchar_t *const *)b;
    for (;; x++, y++) { /* by name, ignoring case; '=' ends a name */
        wchar_t cx = *x == L'=' && x != *(const wchar_t *const *)a ? 0 : towupper(*x);
        wchar_t cy = *y == L'=' && y != *(const wchar_t *const *)b ? 0 : towupper(*y);
        if (cx != cy || !cx) return (int)cx - (int)cy;
    }
}

/* whether entry ("NAME=VALUE") is for the variable `name` (its length n, '=' included) */
static int vx_env_is(const wchar_t *entry, const wchar_t *name, size_t n) {
    return _wcsnicmp(entry, name, n) == 0;
}

/* The host's environment minus what would make the worker load the host's Python, plus the
 * config's env lines and `extra` (NAME=VALUE or NULL), as a sorted UTF-16 block; malloc'd. */
static wchar_t *vx_child_env(const VxConfig *cfg, const char *extra) {
    static const wchar_t *const drop[] = {L"PYTHONPATH=", L"PYTHONHOME=", L"PYTHONSTARTUP=",
                                          L"VOSFX_OFX_TOKEN=", NULL};
    wchar_t *host = GetEnvironmentStringsW();
    size_t n = 0;
    for (const wchar_t *p = host; p && *p; p += wcslen(p) + 1) n++;
    wchar_t **own = calloc(VX_MAX_ENV + 2, sizeof *own);
    const wchar_t **list = calloc(n + VX_MAX_ENV + 2, sizeof *list);
    wchar_t *block = NULL;
    size_t k = 0, own_n = 0;
    if (!own || !list) goto done;
    for (int e = 0; cfg->env[e]; e++)
        if (!(own[own_n++] = vx_wide(cfg->env[e]))) goto done;
    if (extra && !(own[own_n++] = vx_wide(extra))) goto done;
    for (const wchar_t *p = host; p && *p; p += wcslen(p) + 1) {
        int skip = 0;
        for (int d = 0; drop[d]; d++) skip |= vx_env_is(p, drop[d], wcslen(drop[d]));
        for (size_t e = 0; e < own_n; e++) { /* the config's NAME=VALUE wins over the host's */
            const wchar_t *eq = wcschr(own[e] + 1, L'=');
            skip |= eq && vx_env_is(p, own[e], (size_t)(eq - own[e]) + 1);
        }
        if (!skip) list[k++] = p;
    }
    for (size_t e = 0; e < own_n; e++) list[k++] = own[e];
    qsort(list, k, sizeof *list, vx_env_name_cmp); /* CreateProcess asks for a sorted block */
    size_t total = 1;
    for (size_t i = 0; i < k; i++) total += wcslen(list[i]) + 1;
    block = malloc(total * sizeof *block);
    if (block) {
        wchar_t *o = block;
        for (size_t i = 0; i < k; i++) {
            size_t len = wcslen(list[i]) + 1;
            memcpy(o, list[i], len * sizeof *o);
            o += len;
        }
        *o = L'\0';
    }
done:
    if (own)
        for (size_t e = 0; e < own_n; e++) free(own[e]);
    free(own);
    free(list);
    if (host) FreeEnvironmentStringsW(host);
    return block;
}

/* ---- the worker ------------------------------------------------------------------------------ */

static INIT_ONCE vx_wsa_once = INIT_ONCE_STATIC_INIT;
static int vx_wsa_ok;

static BOOL CALLBACK vx_wsa_start(PINIT_ONCE once, PVOID param, PVOID *context) {
    (void)once, (void)param, (void)context;
    WSADATA data;
    vx_wsa_ok = WSAStartup(MAKEWORD(2, 2), &data) == 0;
    return TRUE;
}

void vxw_init(VxWorker *w) {
    memset(w, 0, sizeof *w);
    w->listener = w->sock = VX_NO_SOCKET;
}

/* dir\name as UTF-16 (malloc'd) */
static wchar_t *vx_in_dir(const VxWorker *w, const char *name) {
    char path[sizeof w->dir + 32];
    snprintf(path, sizeof path, "%s\\%s", w->dir, name);
    return vx_wide(path);
}

static void vx_remove_in_dir(const VxWorker *w, const char *name) {
    wchar_t *path = vx_in_dir(w, name);
    if (path) DeleteFileW(path);
    free(path);
}

/* everything of a worker closed and its folder's files removed: all of them, or (keep_log)
 * all but its log */
static void vx_release(VxWorker *w, int keep_log) {
    if (w->sock != VX_NO_SOCKET) closesocket((SOCKET)w->sock);
    if (w->listener != VX_NO_SOCKET) closesocket((SOCKET)w->listener);
    if (w->shm) UnmapViewOfFile(w->shm);
    if (w->shm_map) CloseHandle(w->shm_map);
    if (w->shm_file) CloseHandle(w->shm_file);
    if (w->process) CloseHandle(w->process);
    if (w->job) CloseHandle(w->job); /* ends the worker if it is still there */
    if (w->dir[0]) {
        vx_remove_in_dir(w, VX_SHM_NAME);
        if (!keep_log) {
            vx_remove_in_dir(w, VX_LOG_NAME);
            wchar_t *dir = vx_wide(w->dir);
            if (dir) RemoveDirectoryW(dir);
            free(dir);
        }
    }
    vxw_init(w);
}

/* the worker's folder: %TEMP%\vosfx-ofx-<pid>-<random>, new */
static int vx_make_dir(VxWorker *w, char *err, size_t errlen) {
    wchar_t tmp[MAX_PATH + 1];
    DWORD n = GetTempPathW(sizeof tmp / sizeof tmp[0], tmp);
    char base[4 * MAX_PATH];
    if (n == 0 || n > MAX_PATH || vx_narrow(tmp, base, sizeof base) != 0) {
        snprintf(err, errlen, "cannot find the folder for temporary files (%%TEMP%%)");
        return -1;
    }
    size_t len = strlen(base);
    if (len && (base[len - 1] == '\\' || base[len - 1] == '/')) base[--len] = '\0';
    for (int tries = 0; tries < 16; tries++) {
        unsigned char r[6];
        if (BCryptGenRandom(NULL, r, sizeof r, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) break;
        snprintf(w->dir, sizeof w->dir, "%s\\vosfx-ofx-%lu-%02x%02x%02x%02x%02x%02x", base,
                 (unsigned long)GetCurrentProcessId(), r[0], r[1], r[2], r[3], r[4], r[5]);
        wchar_t *dir = vx_wide(w->dir);
        BOOL made = dir && CreateDirectoryW(dir, NULL);
        DWORD code = GetLastError();
        free(dir);
        if (made) return 0;
        if (code != ERROR_ALREADY_EXISTS) {
            char why[256], shown[512];
            vx_win_error(code, why, sizeof why);
            vx_printable(shown, sizeof shown, w->dir, strlen(w->dir));
            snprintf(err, errlen, "cannot create the worker's folder %s: %s", shown, why);
            w->dir[0] = '\0';
            return -1;
        }
    }
    snprintf(err, errlen, "cannot create the worker's folder in %s", base);
    w->dir[0] = '\0';
    return -1;
}

/* the listening socket on 127.0.0.1 (a port the system picks) and the token */
static int vx_listen(VxWorker *w, int *port, char *err, size_t errlen) {
    InitOnceExecuteOnce(&vx_wsa_once, vx_wsa_start, NULL, NULL);
    if (!vx_wsa_ok) {
        snprintf(err, errlen, "cannot start Windows sockets (WSAStartup)");
        return -1;
    }
    SOCKET s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_NO_HANDLE_INHERIT);
    if (s == INVALID_SOCKET) {
        snprintf(err, errlen, "cannot open a socket for the worker (error %d)", WSAGetLastError());
        return -1;
    }
    w->listener = (uintptr_t)s;
    BOOL exclusive = TRUE; /* no other program may bind the same port */
    setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char *)&exclusive, sizeof exclusive);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    int len = sizeof addr;
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(s, 4) != 0 ||
        getsockname(s, (struct sockaddr *)&addr, &len) != 0) {
        snprintf(err, errlen, "cannot listen on 127.0.0.1 for the worker (error %d)",
                 WSAGetLastError());
        return -1;
    }
    *port = ntohs(addr.sin_port);
    unsigned char r[VX_TOKEN_BYTES];
    if (BCryptGenRandom(NULL, r, sizeof r, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) {
        snprintf(err, errlen, "cannot make the worker's token (BCryptGenRandom)");
        return -1;
    }
    for (int i = 0; i < VX_TOKEN_BYTES; i++) snprintf(w->token + 2 * i, 3, "%02x", r[i]);
    return 0;
}

/* a handle the child inherits (only through the explicit list, which takes inheritable
 * handles alone; a host thread that starts a program with blanket inheritance in the
 * moment before vxw_start closes it would hand it over too: Windows has no way around that
 * but the list, which that other caller would have to use) */
static HANDLE vx_inheritable(const wchar_t *path, DWORD access, DWORD disposition) {
    SECURITY_ATTRIBUTES sa = {sizeof sa, NULL, TRUE};
    return CreateFileW(path, access, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, &sa,
                       disposition, FILE_ATTRIBUTE_NORMAL, NULL);
}

/* Start argv in `dir` (NULL: the host's), with env, inheriting exactly the handles named
 * (stdin, stdout, stderr; none when in is NULL); the process is left suspended when `job`
 * is given, assigned to it, then resumed. */
static int vx_create(const char *const *argv, const char *what, const wchar_t *env,
                     const wchar_t *dir, HANDLE in, HANDLE out, HANDLE job, DWORD flags,
                     PROCESS_INFORMATION *pi, char *err, size_t errlen) {
    wchar_t *program = NULL;
    wchar_t *cmd = vx_command_line(argv, what, &program, err, errlen);
    if (!cmd) return -1;
    STARTUPINFOEXW si;
    memset(&si, 0, sizeof si);
    si.StartupInfo.cb = sizeof si;
    HANDLE handles[2] = {in, out};
    SIZE_T size = 0;
    LPPROC_THREAD_ATTRIBUTE_LIST attrs = NULL;
    BOOL inherit = FALSE;
    if (in) {
        si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
        si.StartupInfo.hStdInput = in;
        si.StartupInfo.hStdOutput = si.StartupInfo.hStdError = out;
        InitializeProcThreadAttributeList(NULL, 1, 0, &size);
        attrs = malloc(size);
        if (attrs && InitializeProcThreadAttributeList(attrs, 1, 0, &size) &&
            UpdateProcThreadAttribute(attrs, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, handles,
                                      sizeof handles, NULL, NULL)) {
            si.lpAttributeList = attrs;
            inherit = TRUE;
            flags |= EXTENDED_STARTUPINFO_PRESENT;
        }
    }
    if (in && !inherit) { /* without the list, inheriting would hand over the host's handles */
        free(attrs);
        free(cmd);
        free(program);
        snprintf(err, errlen, "cannot limit the handles the worker inherits");
        return -1;
    }
    flags |= CREATE_UNICODE_ENVIRONMENT | CREATE_NO_WINDOW | (job ? CREATE_SUSPENDED : 0);
    memset(pi, 0, sizeof *pi);
    BOOL ok = CreateProcessW(program, cmd, NULL, NULL, inherit, flags, (LPVOID)env, dir,
                             &si.StartupInfo, pi);
    DWORD code = GetLastError();
    if (attrs) {
        DeleteProcThreadAttributeList(attrs);
        free(attrs);
    }
    free(cmd);
    free(program);
    if (!ok) {
        char why[256], shown[512];
        vx_win_error(code, why, sizeof why);
        vx_printable(shown, sizeof shown, argv[0], strlen(argv[0]));
        snprintf(err, errlen, "cannot start %s'%s': %s", what, shown, why);
        return -1;
    }
    if (job && pi->hProcess) AssignProcessToJobObject(job, pi->hProcess); /* best effort */
    if (pi->hThread) {
        if (job) ResumeThread(pi->hThread);
        CloseHandle(pi->hThread);
        pi->hThread = NULL;
    }
    return 0;
}

int vxw_start(VxWorker *w, char *err, size_t errlen) {
    VxConfig cfg;
    if (vx_config(&cfg, err, errlen) != 0) return -1;
    vxw_init(w);
    int port = 0;
    if (vx_make_dir(w, err, errlen) != 0 || vx_listen(w, &port, err, errlen) != 0) {
        vx_release(w, 0);
        return -1;
    }
    wchar_t *shm_path = vx_in_dir(w, VX_SHM_NAME), *log_path = vx_in_dir(w, VX_LOG_NAME);
    w->shm_file = shm_path ? CreateFileW(shm_path, GENERIC_READ | GENERIC_WRITE,
                                         FILE_SHARE_READ | FILE_SHARE_WRITE, NULL, CREATE_NEW,
                                         FILE_ATTRIBUTE_TEMPORARY, NULL)
                           : INVALID_HANDLE_VALUE;
    DWORD code = w->shm_file == INVALID_HANDLE_VALUE ? GetLastError() : 0; /* the first failure's */
    /* appended to by both stdout and stderr: neither overwrites the other's lines */
    HANDLE log = log_path ? vx_inheritable(log_path, FILE_APPEND_DATA | SYNCHRONIZE, CREATE_NEW)
                          : INVALID_HANDLE_VALUE;
    if (!code && log == INVALID_HANDLE_VALUE) code = GetLastError();
    HANDLE nul = vx_inheritable(L"NUL", GENERIC_READ, OPEN_EXISTING);
    if (!code && nul == INVALID_HANDLE_VALUE) code = GetLastError();
    free(shm_path);
    free(log_path);
    if (w->shm_file == INVALID_HANDLE_VALUE) w->shm_file = NULL;
    snprintf(w->log_path, sizeof w->log_path, "%s\\%s", w->dir, VX_LOG_NAME);
    if (!w->shm_file || log == INVALID_HANDLE_VALUE || nul == INVALID_HANDLE_VALUE) {
        char why[256];
        vx_win_error(code, why, sizeof why);
        snprintf(err, errlen, "cannot create the worker's channel: %s", why);
        if (log != INVALID_HANDLE_VALUE) CloseHandle(log);
        if (nul != INVALID_HANDLE_VALUE) CloseHandle(nul);
        vx_release(w, 0);
        return -1;
    }
    const char *argv[2 * VX_MAX_ARGS + 8];
    int n = vx_worker_argv(&cfg, argv);
    char port_s[16], token_env[96];
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(token_env, sizeof token_env, "VOSFX_OFX_TOKEN=%s", w->token);
    argv[n++] = "--connect";
    argv[n++] = port_s;
    argv[n++] = "--shm-file";
    argv[n++] = VX_SHM_NAME;
    argv[n] = NULL;
    /* the worker ends with the host: a job that kills what it holds when its last handle
     * (ours) closes; where the host's own job forbids a nested one, the worker runs without */
    w->job = CreateJobObjectW(NULL, NULL);
    if (w->job) {
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits;
        memset(&limits, 0, sizeof limits);
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        SetInformationJobObject(w->job, JobObjectExtendedLimitInformation, &limits,
                                sizeof limits);
    }
    wchar_t *env = vx_child_env(&cfg, token_env);
    wchar_t *dir = vx_wide(w->dir);
    PROCESS_INFORMATION pi;
    int rc = env && dir ? vx_create(argv, "the vosfx worker ", env, dir, nul, log, w->job, 0, &pi, err,
                                          errlen) : -1;
    if (!env || !dir) snprintf(err, errlen, "out of memory");
    free(env);
    free(dir);
    CloseHandle(log);
    CloseHandle(nul);
    if (rc != 0) {
        vx_release(w, 0); /* nothing ran: nothing to read */
        return -1;
    }
    w->process = pi.hProcess; /* NULL under Wine for a Unix worker */
    w->running = 1;
    return 0;
}

/* whether the worker's process has ended (never, as far as we can tell, without a handle) */
static int vx_exited(const VxWorker *w) {
    return w->process && WaitForSingleObject(w->process, 0) == WAIT_OBJECT_0;
}

/* wait up to timeout_ms for s to be readable; 1 readable, 0 timed out, -1 error */
static int vx_wait_readable(uintptr_t s, int timeout_ms) {
    fd_set r;
    FD_ZERO(&r);
    FD_SET((SOCKET)s, &r);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int k = select(0, &r, NULL, NULL, &tv);
    return k < 0 ? -1 : k > 0;
}

/* read exactly n bytes from s within timeout_ms each; 0, -1 closed, -2 timed out */
static int vx_read_raw(uintptr_t s, char *p, size_t n, int timeout_ms) {
    while (n > 0) {
        int r = vx_wait_readable(s, timeout_ms);
        if (r == 0) return -2;
        if (r < 0) return -1;
        int k = recv((SOCKET)s, p, n > 65536 ? 65536 : (int)n, 0);
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* the worker's connection, its token checked; waits up to timeout_ms, and no longer than the
 * worker lives */
static int vx_accept(VxWorker *w, int timeout_ms, char *err, size_t errlen) {
    ULONGLONG deadline = GetTickCount64() + (ULONGLONG)timeout_ms;
    for (;;) {
        ULONGLONG now = GetTickCount64();
        if (vx_exited(w)) {
            snprintf(err, errlen, "the vosfx worker closed its channel");
            return -1;
        }
        if (now >= deadline) {
            snprintf(err, errlen, "the vosfx worker did not answer for %d s", timeout_ms / 1000);
            return -1;
        }
        ULONGLONG left = deadline - now;
        int r = vx_wait_readable(w->listener, left < 100 ? (int)left : 100);
        if (r < 0) {
            snprintf(err, errlen, "the worker's socket failed (error %d)", WSAGetLastError());
            return -1;
        }
        if (r == 0) continue;
        SOCKET s = accept((SOCKET)w->listener, NULL, NULL);
        if (s == INVALID_SOCKET) continue;
        char got[2 * VX_TOKEN_BYTES + 1];
        unsigned char diff = 0;
        int rc = vx_read_raw((uintptr_t)s, got, sizeof got, 5000);
        for (size_t i = 0; rc == 0 && i < 2 * VX_TOKEN_BYTES; i++)
            diff |= (unsigned char)(got[i] ^ w->token[i]); /* the same time for any token */
        if (rc != 0 || diff || got[2 * VX_TOKEN_BYTES] != '\n') {
            closesocket(s); /* not our worker: keep waiting for it */
            continue;
        }
        BOOL nodelay = TRUE; /* small requests and replies: no Nagle delay between them */
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&nodelay, sizeof nodelay);
        closesocket((SOCKET)w->listener);
        w->listener = VX_NO_SOCKET;
        w->sock = (uintptr_t)s;
        return 0;
    }
}

int vxw_reserve(VxWorker *w, size_t nbytes, char *err, size_t errlen) {
    if (w->shm_size >= nbytes) return 0;
    size_t size = (nbytes + 0xFFFFF) & ~(size_t)0xFFFFF; /* whole MiB */
    if (w->shm) UnmapViewOfFile(w->shm);
    if (w->shm_map) CloseHandle(w->shm_map);
    w->shm = NULL;
    w->shm_map = NULL;
    w->shm_size = 0;
    /* a mapping larger than the file grows the file: the worker sees the new size */
    w->shm_map = CreateFileMappingW(w->shm_file, NULL, PAGE_READWRITE, (DWORD)((uint64_t)size >> 32),
                                    (DWORD)size, NULL);
    if (w->shm_map) w->shm = MapViewOfFile(w->shm_map, FILE_MAP_ALL_ACCESS, 0, 0, size);
    if (!w->shm) {
        char why[256];
        vx_win_error(GetLastError(), why, sizeof why);
        snprintf(err, errlen, "shared memory of %zu bytes: %s", size, why);
        return -1;
    }
    w->shm_size = size;
    return 0;
}

int vxw_write(VxWorker *w, const void *buf, size_t n) {
    if (!w->running || w->sock == VX_NO_SOCKET) return -1;
    const char *p = buf;
    while (n > 0) {
        int k = send((SOCKET)w->sock, p, n > 65536 ? 65536 : (int)n, 0);
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* the worker's connection is taken (and its token checked) on the first read */
int vxw_read(VxWorker *w, void *buf, size_t n, int timeout_ms, char *err, size_t errlen) {
    if (!w->running) {
        snprintf(err, errlen, "the vosfx worker is not running");
        return -1;
    }
    if (w->sock == VX_NO_SOCKET && vx_accept(w, timeout_ms, err, errlen) != 0) return -1;
    int rc = vx_read_raw(w->sock, buf, n, timeout_ms);
    if (rc == -2)
        snprintf(err, errlen, "the vosfx worker did not answer for %d s", timeout_ms / 1000);
    else if (rc != 0)
        snprintf(err, errlen, "the vosfx worker closed its channel");
    return rc == 0 ? 0 : -1;
}

int vxw_stop(VxWorker *w, char *how, size_t howlen) {
    int exit_status = -1;
    if (how && howlen) how[0] = '\0';
    if (!w->running) {
        vx_release(w, 0);
        return -1;
    }
    int closed = 0; /* the worker closed its end after QUIT */
    if (w->sock != VX_NO_SOCKET) {
        vxw_send(w, VX_QUIT, 0, 0, 0, 0, 0, 0, 0, NULL);
        shutdown((SOCKET)w->sock, SD_SEND);
        /* its end of the channel closes as it goes (the only sign under Wine) */
        char drain[256];
        ULONGLONG deadline = GetTickCount64() + 3000;
        while (!vx_exited(w) && GetTickCount64() < deadline) {
            int r = vx_wait_readable(w->sock, 100);
            if (r < 0) break;
            if (r > 0 && recv((SOCKET)w->sock, drain, sizeof drain, 0) <= 0) {
                closed = 1;
                break;
            }
        }
    }
    int ended_by_us = 0;
    if (w->process) {
        if (WaitForSingleObject(w->process, 3000) != WAIT_OBJECT_0) {
            TerminateProcess(w->process, 1);
            WaitForSingleObject(w->process, 2000);
            ended_by_us = 1;
        }
        DWORD code = STILL_ACTIVE;
        if (GetExitCodeProcess(w->process, &code) && code != STILL_ACTIVE && !ended_by_us)
            exit_status = (int)code;
        if (how && howlen) {
            if (ended_by_us)
                snprintf(how, howlen, "did not quit and was ended");
            else if (exit_status >= 0)
                snprintf(how, howlen, "exited with status %d", exit_status);
            else
                snprintf(how, howlen, "ended");
        }
    } else {
        /* no handle (Wine starting a Unix worker): a worker that closed its end when asked to
         * quit is taken as a clean exit; one that did not is ended with the job (or not at
         * all, under Wine) */
        exit_status = closed ? 0 : -1;
        if (how && howlen) snprintf(how, howlen, "ended");
    }
    int keep_log = exit_status != 0 || getenv("VOSFX_OFX_KEEP_LOG");
    vx_release(w, keep_log);
    return exit_status;
}

/* ---- the studio: a process the host does not wait for --------------------------------------- */

/* Windows leaves no zombies: the handles are closed at once and nothing is left to reap. */
void vx_reap_detached(void) {}

void vx_forget_detached(void) {}

int vx_spawn_detached(const char *const *argv, char *err, size_t errlen) {
    VxConfig cfg;
    if (vx_config(&cfg, err, errlen) != 0) return -1;
    wchar_t *env = vx_child_env(&cfg, NULL);
    if (!env) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    PROCESS_INFORMATION pi;
    int rc = vx_create(argv, "", env, NULL, NULL, NULL, NULL, CREATE_NEW_PROCESS_GROUP, &pi,
                       err, errlen);
    free(env);
    if (rc == 0 && pi.hProcess) CloseHandle(pi.hProcess);
    return rc;
}
