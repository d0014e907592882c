/* A stand-in for the vosfx worker as a Windows program (tests only): under Wine the effect
 * gets a process handle for it, hands it the listed standard handles and puts it in its job
 * object, which it does not for the Linux worker. It is started as the worker is
 * (`--connect PORT --shm-file NAME`, the token in VOSFX_OFX_TOKEN) and does what
 * VOSFX_FAKE_WIN says:
 *
 *   exit3    writes a Python-like error to stderr and exits with status 3 before connecting
 *            (a vosfx that is not installed);
 *   hang     connects, says READY, then answers nothing (the effect's timeout ends it);
 *   linger   connects, says READY, waits 5 s, then writes "survived" to VOSFX_FAKE_MARK
 *            (the host is gone by then: its job must have ended this process).
 */
#define WIN32_LEAN_AND_MEAN
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vosfx_ofx_proto.h"

static SOCKET connect_to_effect(int port) {
    WSADATA data;
    if (WSAStartup(MAKEWORD(2, 2), &data) != 0) return INVALID_SOCKET;
    SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((u_short)port);
    if (s == INVALID_SOCKET || connect(s, (struct sockaddr *)&addr, sizeof addr) != 0)
        return INVALID_SOCKET;
    const char *token = getenv("VOSFX_OFX_TOKEN");
    char line[80];
    snprintf(line, sizeof line, "%s\n", token ? token : "");
    send(s, line, (int)strlen(line), 0);
    VxMsg ready = {VX_MAGIC, VX_READY, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    send(s, (const char *)&ready, sizeof ready, 0);
    return s;
}

int main(int argc, char **argv) {
    const char *mode = getenv("VOSFX_FAKE_WIN");
    int port = 0;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--connect")) port = atoi(argv[i + 1]);
    if (!mode || !port) {
        fprintf(stderr, "fake worker: expected VOSFX_FAKE_WIN and --connect PORT\n");
        return 2;
    }
    if (!strcmp(mode, "exit3")) {
        fprintf(stderr, "Traceback (most recent call last):\n");
        fprintf(stderr, "ModuleNotFoundError: No module named 'vosfx'\n");
        return 3;
    }
    SOCKET s = connect_to_effect(port);
    if (s == INVALID_SOCKET) {
        fprintf(stderr, "fake worker: cannot reach the effect on port %d\n", port);
        return 2;
    }
    if (!strcmp(mode, "hang")) {
        for (;;) Sleep(1000);
    }
    if (!strcmp(mode, "linger")) {
        Sleep(5000);
        FILE *f = fopen(getenv("VOSFX_FAKE_MARK"), "w");
        if (f) fputs("survived", f), fclose(f);
        return 0;
    }
    fprintf(stderr, "fake worker: unknown mode %s\n", mode);
    return 2;
}
