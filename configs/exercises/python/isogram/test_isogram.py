import unittest

from isogram import is_isogram


class IsogramTest(unittest.TestCase):
    def test_isogram(self):
        self.assertTrue(is_isogram("lumberjacks"))

    def test_repeated_letter(self):
        self.assertFalse(is_isogram("isograms"))

    def test_hyphens_and_spaces_ignored(self):
        self.assertTrue(is_isogram("six-year-old"))

    def test_case_insensitive(self):
        self.assertFalse(is_isogram("Alphabet"))


if __name__ == "__main__":
    unittest.main()
