/* Binding of the views kernels. */
#include "arg.h"

PyMethodDef ssde_views_methods[] = {
    {NULL, NULL, 0, NULL},
};
