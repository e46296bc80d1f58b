import unittest

from reverse_string import reverse


class ReverseTest(unittest.TestCase):
    def test_word(self):
        self.assertEqual(reverse("robot"), "tobor")

    def test_empty(self):
        self.assertEqual(reverse(""), "")

    def test_unicode(self):
        self.assertEqual(reverse("héllo"), "olléh")


if __name__ == "__main__":
    unittest.main()
