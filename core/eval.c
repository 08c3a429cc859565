/* placeholder: owned by the dataset/eval helper */
#include "sw_error.h"
