"""Check digits of Danish healthcare identifiers."""


def gs1_check_digit_ok(number: str) -> bool:
    """GS1 mod-10 check of an EAN/GLN location number (13 digits)."""
    if len(number) != 13 or not number.isdigit():
        return False
    body, check = number[:-1], int(number[-1])
    total = sum(int(digit) * (3 if position % 2 == 0 else 1) for position, digit in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check
