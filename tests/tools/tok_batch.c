/* placeholder until written: fails on purpose */
int main(void)
{
    return 1;
}
