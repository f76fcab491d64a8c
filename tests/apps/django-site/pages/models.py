from django.db import models


class Visit(models.Model):
    """One row per page view of the home page."""

    path = models.CharField(max_length=200)
    user_agent = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.path} at {self.created_at:%Y-%m-%d %H:%M:%S}"
