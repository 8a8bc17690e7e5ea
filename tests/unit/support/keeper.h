/*
 * keeper.h - a libvirt connection of the test program's own.
 *
 * libvirt's test:///default driver keeps one in-process state for as long
 * as a connection to it is open.  A group that holds `keeper` open sees
 * what the backend under test did, through a connection the backend does
 * not know about, and keeps that state alive between the backend's own
 * connections.
 *
 * keeper_group_setup() and keeper_group_teardown() have the shape of cmocka
 * group fixtures but call nothing of cmocka's.
 */
#ifndef STRATUS_TESTS_KEEPER_H
#define STRATUS_TESTS_KEEPER_H

#include <libvirt/libvirt.h>

#define KEEPER_URI "test:///default"

/* Open between keeper_group_setup() and keeper_group_teardown(), NULL otherwise. */
extern virConnectPtr keeper;

/* Open keeper on KEEPER_URI; 0, or -1 when libvirt refuses.  @state is unused. */
int keeper_group_setup(void **state);
/* Close keeper; always 0. */
int keeper_group_teardown(void **state);

#endif
