document.getElementById("year").textContent = `© ${new Date().getFullYear()}`;
