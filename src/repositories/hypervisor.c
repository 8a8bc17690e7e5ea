#include "repositories/hypervisor.h"

const char *
hv_state_name(enum hv_state state)
{
    switch (state) {
    case HV_STATE_NOSTATE:
        return "nostate";
    case HV_STATE_RUNNING:
        return "running";
    case HV_STATE_BLOCKED:
        return "blocked";
    case HV_STATE_PAUSED:
        return "paused";
    case HV_STATE_SHUTDOWN:
        return "shutdown";
    case HV_STATE_SHUTOFF:
        return "shutoff";
    case HV_STATE_CRASHED:
        return "crashed";
    case HV_STATE_PMSUSPENDED:
        return "pmsuspended";
    }
    return "unknown";
}
