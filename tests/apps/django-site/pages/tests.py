from django.test import TestCase

from .models import Visit


class IndexTests(TestCase):
    def test_index_counts_visits(self):
        response = self.client.get("/")
        self.assertContains(response, "corpus:django-site")
        self.assertContains(response, "visits: 1")
        self.assertEqual(Visit.objects.count(), 1)
