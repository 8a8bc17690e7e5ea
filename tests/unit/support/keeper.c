#include "support/keeper.h"

#include <stddef.h>

virConnectPtr keeper;

int
keeper_group_setup(void **state)
{
    (void)state;
    keeper = virConnectOpen(KEEPER_URI);
    return keeper ? 0 : -1;
}

int
keeper_group_teardown(void **state)
{
    (void)state;
    if (keeper)
        virConnectClose(keeper);
    keeper = NULL;
    return 0;
}
