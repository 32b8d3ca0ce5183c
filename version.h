/* version.h — the release every binary reports with --version (daemon, CLI, tools). */
#ifndef LH_VERSION_H
#define LH_VERSION_H

#define LH_VERSION "0.1.0"

#endif
