"""shadowgate: champion/challenger credit-risk decisions for a BNPL lender, with shadow scoring and gated promotion."""

__version__ = "0.1.0"
