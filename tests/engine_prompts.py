"""Prompts shared by the engine tests (hf and vllm are checked against each other on these)."""

Q1 = "<question> Tom has 12 apples and buys 7 more. How many apples does Tom have? </question>\n"
Q2 = "<question> Mia had 50 cards and lost 8 of them. How many cards remain? </question>\n"
CODE_STEP = (
    "<step>\n<p>\nCompute what is left.\n</p>\n<code>\n```python\nprint(50 - 8)\n```\n</code>\n"
    "<output>\n42\n</output>\n</step>\n"
)
Q3 = "<question> Zoe buys 4 boxes with 9 shells in each box. How many shells does Zoe buy? </question>\n"
