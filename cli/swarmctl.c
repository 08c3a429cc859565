/* placeholder: the CLI helper replaces this file */
#include <stdio.h>
int main(void)
{
    fputs("swarmctl: not built yet\n", stderr);
    return 1;
}
