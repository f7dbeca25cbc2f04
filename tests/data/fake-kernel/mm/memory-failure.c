/* A stand-in for mm/memory-failure.c in the fake kernel tree. */
static int truncate_error_folio(int dirty)
{
	int ret = 0;

	if (dirty)
		ret = 1;
	return ret;
}

int memory_failure(int dirty)
{
	return truncate_error_folio(dirty);
}
