/*
 * main.c: the `ragops-embed-server` executable, the local fake embedding
 * provider (docs/embed-server.md). `ragops embed-server ...` execs it with
 * the same arguments; argv[0] is not read.
 */
#include "embed_server.h"

int main(int argc, char **argv)
{
    return embed_server_main(argc, argv);
}
