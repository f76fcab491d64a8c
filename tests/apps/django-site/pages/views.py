from django.http import HttpResponse
from django.shortcuts import render

from .models import Visit


def index(request):
    Visit.objects.create(path=request.path, user_agent=request.headers.get("User-Agent", "")[:300])
    return render(request, "pages/index.html", {"visits": Visit.objects.count()})


def health(request):
    return HttpResponse("ok", content_type="text/plain")
