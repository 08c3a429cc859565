#include "gpt2_forward.h"
