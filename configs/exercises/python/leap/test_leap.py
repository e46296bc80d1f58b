import unittest

from leap import leap_year


class LeapTest(unittest.TestCase):
    def test_divisible_by_4(self):
        self.assertTrue(leap_year(1996))

    def test_not_divisible_by_4(self):
        self.assertFalse(leap_year(2015))

    def test_century(self):
        self.assertFalse(leap_year(1900))

    def test_divisible_by_400(self):
        self.assertTrue(leap_year(2000))


if __name__ == "__main__":
    unittest.main()
