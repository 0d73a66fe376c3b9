"""Who is calling (principals and roles) and what they may see (data scoping)."""
