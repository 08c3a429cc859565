#include "gpt2.h"
