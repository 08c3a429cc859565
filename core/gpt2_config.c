#include "gpt2_config.h"
