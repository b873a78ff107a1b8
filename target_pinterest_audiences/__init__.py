"""Singer target that keeps Pinterest Ads customer lists in sync with computed audiences."""
