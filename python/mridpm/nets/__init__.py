"""Networks: score models with closed-form marginals (analytic) and, later, trained ones."""
