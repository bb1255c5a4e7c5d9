"""Studies: several models compared, the zoo, reports, verdicts, figures and timing."""
