/*
 * master.h - the stratus-api process tree.
 *
 * The master takes a listening socket (fd 0 from spawn-fcgi, fd 3 from
 * systemd socket activation, else it binds cfg->socket itself), pre-forks
 * cfg->workers workers and keeps that many alive.  Signals:
 *   SIGTERM, SIGINT  workers finish their current request and exit; after a
 *                    bounded wait the rest are killed; the socket file the
 *                    master made is removed.
 *   SIGHUP           re-read @config_path; on success start a new set of
 *                    workers and retire the old set gracefully; on error
 *                    keep running as before.
 * Each worker opens its own app (one SQLite and one libvirt connection)
 * after the fork and serves FastCGI requests until told to stop.
 *
 * Before the first fork the master sets up the wait gate (api/waitgate.h)
 * for cfg->max_waiting_requests, shared by every worker it starts, current
 * and retiring sets alike; a reload changes only its limit.  Each worker
 * runs in a slot of its own, and the master gives back the waiting place of
 * a worker that died holding one before the slot is used again.
 */
#ifndef STRATUS_API_MASTER_H
#define STRATUS_API_MASTER_H

#include "common/config.h"

/* Run until stopped.  Returns the exit status for main(). */
int master_run(const char *config_path, const struct api_config *cfg);

#endif
