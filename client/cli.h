/* client/cli.h — what the files of the `longheads` CLI share (private to client/cli*.c): the exit
 * statuses it documents and the connection step every command begins with. */
#ifndef LH_CLI_H
#define LH_CLI_H

#include "longheads.h"

enum {
    EXIT_USAGE = 1,     /* bad command line, unreadable prompt file */
    EXIT_CONNECT = 2,   /* cannot reach the daemon (not running, wrong socket, version) */
    EXIT_REQUEST = 3,   /* the daemon refused or failed the request; connection lost */
    EXIT_INTERRUPTED = 130, /* cancelled with Ctrl-C */
};

/* Connects to the daemon at sock (NULL: the default path); on failure tells the person on
 * stderr where it looked and how to start the daemon, and returns EXIT_CONNECT. */
int lh_cli_connect(lh_client **cp, const char *sock);

/* --attn full|longheads and --score rep|bound (generate, chat, score, passkey): 0, or EXIT_USAGE
 * after telling the person what the option takes. */
int lh_cli_parse_attn(const char *s, lh_client_attn *out);
int lh_cli_parse_score(const char *s, lh_client_chunk_score *out);

/* client/cli_passkey.c: `longheads passkey`; returns one of the exit statuses above. */
int lh_cli_passkey(const char *sock, int argc, char **argv);

#endif
